"""How long the candidates list and the agents list take at scale (not a test).

Usage: .venv/bin/python bench/candidates_list.py [--candidates 1000000] [--database-url URL] [--runs 7]

Fills a database (by default a fresh SQLite file in a temporary folder; with --database-url
any database, reused as it is if it already holds that many candidates) with demo
candidates, says how long that took, logs in, and times every view of the list: the first
page, each filter, name / e-mail / phone searches, each sort, deep pages (a cursor half-way
down, the last page, a date) and the agents pages. Prints the median (p50) per view in
milliseconds against the target, and target / slowest (>= 1 meets it).
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask_migrate import upgrade  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402

from milo_portal import create_app  # noqa: E402
from milo_portal.candidates import services  # noqa: E402
from milo_portal.clock import now  # noqa: E402
from milo_portal.config import TestConfig  # noqa: E402
from milo_portal.demo import DEMO_PASSWORD, create_demo_candidates, create_demo_data  # noqa: E402
from milo_portal.extensions import db  # noqa: E402
from milo_portal.models import Agent, Candidate  # noqa: E402

TARGET_MS = 100  # every view of the list, at a million candidates


def build(count: int) -> None:
    """Migrate, then add demo candidates up to ``count``; print how long it took."""
    upgrade()
    create_demo_data(db.session)
    have = db.session.scalar(select(func.count()).select_from(Candidate))
    if have >= count:
        print(f"demo data: reusing {have:,} candidates")
    else:
        started = time.monotonic()
        create_demo_candidates(db.session, count - have, 7, now())
        print(f"demo data: {count - have:,} candidates (with their events and answers) "
              f"built in {time.monotonic() - started:.0f} s")
    if db.engine.dialect.name == "postgresql":
        # What autovacuum would have done by now on a real server: statistics for the planner.
        db.session.commit()
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE candidate"))
            conn.execute(text("VACUUM ANALYZE candidate_count"))


def deep_cursor(fraction: float) -> str:
    """A cursor ``fraction`` of the way down the default list (found once, untimed)."""
    total = db.session.scalar(select(func.count()).select_from(Candidate).where(Candidate.erased_at.is_(None)))
    row = db.session.scalar(select(Candidate).where(Candidate.erased_at.is_(None))
                            .order_by(Candidate.created_at.desc(), Candidate.id.desc())
                            .offset(int(total * fraction)).limit(1))
    return services.encode_cursor(row, "added")


def views() -> dict[str, str]:
    """The URLs to time, by label."""
    agent = db.session.scalar(select(Agent.id).order_by(Agent.id))
    somebody = db.session.scalar(select(Candidate.email).where(Candidate.id == 123_457)) or "demo123457@"
    middle = db.session.scalar(select(Candidate.created_at).order_by(Candidate.id).offset(
        db.session.scalar(select(func.count()).select_from(Candidate)) // 2).limit(1))
    return {
        "first page": "/candidates",
        "filter: stage": "/candidates?stage=started",
        "filter: source": "/candidates?source=indeed",
        "filter: channel": "/candidates?channel=whatsapp",
        "filter: agent": f"/candidates?agent_id={agent}",
        "filter: agent + stage": f"/candidates?agent_id={agent}&stage=completed",
        "filter: rare stage+channel": "/candidates?stage=opted_out&channel=sms",
        "search: common name": "/candidates?q=lovelace",
        "search: full name": "/candidates?q=ada+lovelace",
        "search: e-mail": f"/candidates?q={somebody}",
        "search: e-mail part": "/candidates?q=demo12345",
        "search: phone digits": "/candidates?q=555+0123",
        "search: 2 letters": "/candidates?q=ad",
        "search + stage": "/candidates?q=lovelace&stage=started",
        "sort: added, oldest": "/candidates?sort=added&dir=asc",
        "sort: activity": "/candidates?sort=activity&dir=desc",
        "sort: deadline": "/candidates?sort=deadline&dir=asc",
        "sort: invited": "/candidates?sort=invited&dir=desc",
        "sort: name": "/candidates?sort=name&dir=asc",
        "sort: stage": "/candidates?sort=stage&dir=desc",
        "agent, by activity": f"/candidates?agent_id={agent}&sort=activity&dir=desc",
        "deep page (half-way)": f"/candidates?after={deep_cursor(0.5)}&page=10000",
        "last page, by name": "/candidates?sort=name&dir=asc&last=1",
        "last page": "/candidates?last=1",
        "go to date": f"/candidates?from={middle.date().isoformat()}",
        "agents list": "/agents",
        "agent page": f"/agents/{agent}",
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--candidates", type=int, default=100_000)
    parser.add_argument("--database-url")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3"
    app = create_app(TestConfig, database_url=url)
    with app.app_context():
        build(args.candidates)
        paths = views()
        db.session.remove()
    client = app.test_client()
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', client.get("/login").get_data(as_text=True))
    client.post("/login", data={"email": "dana@demo.milo.test", "password": DEMO_PASSWORD, "csrf_token": token.group(1)})
    print(f"{url.split(':')[0]}; p50 of {args.runs} requests after one warm-up (wall clock; 'cpu here' is this "
          f"process's CPU time: the app and, for SQLite, the database; it shows the cost on a busy machine)")
    worst = 0.0
    for label, path in paths.items():
        client.get(path)
        times, cpu = [], []
        for _ in range(args.runs):
            started, started_cpu = time.perf_counter(), time.process_time()
            response = client.get(path)
            times.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - started_cpu) * 1000)
            assert response.status_code == 200, (path, response.status_code)
        median = statistics.median(times)
        worst = max(worst, median)
        body = response.get_data(as_text=True)
        shown = re.search(r'<span class="muted">([^<]+)</span>', body)
        note = shown.group(1) if shown and path.startswith("/candidates") else ""
        print(f"{label:28s} {median:8.1f} ms  {'ok ' if median < TARGET_MS else 'SLOW'}  "
              f"(cpu here {statistics.median(cpu):6.1f} ms)  {note}")
    print(f"slowest view {worst:.1f} ms; target {TARGET_MS} ms; ratio target/slowest = {TARGET_MS / worst:.2f} "
          f"(>= 1 meets it)")


if __name__ == "__main__":
    main()
