"""How long the Metrics page takes at scale, against the fastest raw query (not a test).

Usage: .venv/bin/python bench/metrics.py [--candidates 100000] [--days 180] [--database-url URL] [--runs 7]

Fills a database (by default a fresh SQLite file in a temporary folder; with --database-url
any database, reused if it already holds that many candidates) with ``demo-data``'s
history, recomputes the candidates' Metrics facts (as the scheduler's tick does; the time
it takes is printed), logs in, and times the whole page's server time with all filters off
(the last 180 days), with one agent and with the default 30 days, plus the agents list.

The baseline is the single fastest raw SQL query over the same events in the same run (one
COUNT over the events of the range). The runs are interleaved: each of ``--runs`` rounds times
the baseline, then each view once, after one warm-up round, so a busy moment of the machine
weighs on both sides. Printed: min and median of each, and the ratios min / min and
median / median. Before timing, the process is prepared as a gunicorn worker is
(``ops.serving.prepare_worker``: what is loaded is frozen out of the garbage collector's way).
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
from milo_portal.ops.serving import prepare_worker  # noqa: E402


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


def interleaved(runs: int, fns: dict) -> dict:
    """Milliseconds of each of ``fns``, called in turn in each of ``runs`` rounds after a
    warm-up round: {label: [ms, ...]}."""
    for fn in fns.values():
        fn()
    times: dict = {label: [] for label in fns}
    for _ in range(runs):
        for label, fn in fns.items():
            started = time.perf_counter()
            fn()
            times[label].append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--candidates", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--database-url")
    parser.add_argument("--runs", type=int, default=7)
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

    def requested(path):
        def get():
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code)
        return get

    def in_app(fn):
        def call():
            with app.app_context():
                fn()
        return call

    prepare_worker()
    times = interleaved(args.runs, {"baseline": in_app(baseline),
                                    **{label: requested(path) for label, path in views.items()}})
    floor = times.pop("baseline")
    low, mid = min(floor), statistics.median(floor)
    print(f"{url.split(':')[0]}, {args.candidates:,} candidates; {args.runs} interleaved rounds after a warm-up")
    print(f"{'':40s} {'min':>9s} {'median':>9s}   ratio to baseline min / median")
    print(f"{'baseline: fastest raw query':40s} {low:6.1f} ms {mid:6.1f} ms")
    for label, ms in times.items():
        print(f"{label:40s} {min(ms):6.1f} ms {statistics.median(ms):6.1f} ms   "
              f"{min(ms) / low:6.1f} / {statistics.median(ms) / mid:6.1f}")


if __name__ == "__main__":
    main()
