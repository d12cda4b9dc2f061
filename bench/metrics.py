"""How long the Metrics page takes at scale, against the fastest raw query (not a test).

Usage: .venv/bin/python bench/metrics.py [--candidates 100000] [--days 180] [--database-url URL] [--runs 5]

Fills a database (by default a fresh SQLite file in a temporary folder; with --database-url
any database, reused if it already holds that many candidates) with ``demo-data``'s
history, recomputes the candidates' Metrics facts (as the scheduler's tick does; the time
it takes is printed), logs in, and times the whole page's server time (median of ``--runs`` requests
after a warm-up) with all filters off (the last 180 days) and with one agent, plus the
agents list. The baseline is the single fastest raw SQL query over the same events in the
same run (one COUNT over the events of the range); the ratio page / baseline is printed.
Goals: under 300 ms on SQLite at 100,000 candidates with a ratio under 3; under 2 s at a million.
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
from milo_portal.clock import now  # noqa: E402
from milo_portal.config import TestConfig  # noqa: E402
from milo_portal.demo import DEMO_PASSWORD, create_demo_candidates, create_demo_data  # noqa: E402
from milo_portal.extensions import db  # noqa: E402
from milo_portal.metrics import facts  # noqa: E402
from milo_portal.models import Agent, Candidate, Event  # noqa: E402


def build(count: int, days: int) -> None:
    """Migrate, then add demo candidates up to ``count`` over ``days``; print how long it took."""
    upgrade()
    create_demo_data(db.session)
    have = db.session.scalar(select(func.count()).select_from(Candidate))
    if have >= count:
        print(f"demo data: reusing {have:,} candidates")
    else:
        started = time.monotonic()
        create_demo_candidates(db.session, count - have, 7, now(), days=days)
        print(f"demo data: {count - have:,} candidates over {days} days built in {time.monotonic() - started:.0f} s")
    events = db.session.scalar(select(func.count()).select_from(Event))
    print(f"events: {events:,}")
    db.session.commit()
    # The page's facts (metrics_fact): recomputed here as the scheduler's tick would in the
    # background, so the timed requests read fresh facts and recompute nothing.
    started = time.monotonic()
    stale = facts.stale_count(db.session)
    facts.refresh(db.session)
    print(f"facts: {stale:,} candidates' facts recomputed in {time.monotonic() - started:.0f} s")
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in ("candidate", "event", "message", "answer"):
                conn.execute(text(f"VACUUM ANALYZE {table}"))
    else:
        db.session.execute(text("ANALYZE"))
        db.session.commit()


def timed(runs: int, fn) -> float:
    """Median milliseconds of ``runs`` calls after one warm-up."""
    fn()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--candidates", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--database-url")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3"
    app = create_app(TestConfig, database_url=url)
    with app.app_context():
        build(args.candidates, args.days)
        agent = db.session.scalar(select(Agent.id).order_by(Agent.id))
        since = now().replace(microsecond=0) - __import__("datetime").timedelta(days=args.days)

        def baseline():
            # The fastest raw query over the same events: one indexed COUNT of the range's invites.
            db.session.execute(select(func.count()).select_from(Event)
                               .where(Event.type == "invited", Event.at >= since)).scalar()
            db.session.rollback()

        raw = timed(args.runs, baseline)
        db.session.remove()
    client = app.test_client()
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', client.get("/login").get_data(as_text=True))
    client.post("/login", data={"email": "dana@demo.milo.test", "password": DEMO_PASSWORD, "csrf_token": token.group(1)})
    period = "period=custom&from={}&to={}".format((now() - __import__("datetime").timedelta(days=args.days - 1))
                                                   .date().isoformat(), now().date().isoformat())
    views = {
        f"metrics, all filters off ({args.days} days)": f"/metrics?{period}",
        "metrics, one agent": f"/metrics?{period}&agent_id={agent}",
        "metrics, 30 days (default)": "/metrics",
        "agents list": "/agents",
    }
    print(f"{url.split(':')[0]}, {args.candidates:,} candidates; median of {args.runs} requests after a warm-up")
    print(f"{'baseline: fastest raw query':40s} {raw:8.1f} ms")
    for label, path in views.items():
        def get(path=path):
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code)
        ms = timed(args.runs, get)
        print(f"{label:40s} {ms:8.1f} ms   ratio to baseline {ms / raw if raw else float('inf'):7.1f}")


if __name__ == "__main__":
    main()
