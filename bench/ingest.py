"""How fast a bulk upload is reviewed and created (not a test).

Usage: .venv/bin/python bench/ingest.py [--rows 10000 50000] [--database-url URL]

For each size, on a fresh database (by default a SQLite file in a temporary folder; with
--database-url that database, emptied first), it generates a CSV export (1 % bad e-mails,
1 % repeated rows), then times:

- review: reading the file into the batch's folder, then checking every row (what the
  review page does);
- create: confirming it, candidates created in chunks with their invites queued, and the
  longest chunk (how long one write unit holds the lock);
- raw: a plain SQLAlchemy Core bulk insert of the same rows into the same tables
  (candidates, their events, invites and report rows) in one transaction, in the same run.

Prints the figures against the goals (review < 2 s and create < 3 s for 10,000 rows,
create rows/s at least 0.4 of the raw insert's, peak memory under 300 MB at 50,000 rows).

Memory: each size runs in a process of its own (a fresh interpreter, as the app's process
starts), which goes through what the app's process goes through for an upload: the review
(the request) and the create (the scheduler's worker, in the same process). The bench keeps
no copy of the rows meanwhile (the review's result is dropped before the create, as the
request drops it; the raw insert reads the created rows back afterwards). The figure is the
process's peak resident memory (Linux's VmHWM) up to the end of the create, before the raw
insert: the whole interpreter with the app loaded, Python's heap, and the SQLite file's
pages the process mapped (the app reads SQLite through memory mapping; these pages are
counted, though the kernel can drop them). The create's own peak is also shown: the high
water mark is reset just before it (Linux's /proc/self/clear_refs).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask_migrate import upgrade  # noqa: E402
from sqlalchemy import insert, select, text  # noqa: E402

from milo_portal import create_app  # noqa: E402
from milo_portal.clock import now  # noqa: E402
from milo_portal.config import TestConfig  # noqa: E402
from milo_portal.extensions import db  # noqa: E402
from milo_portal.imports import services  # noqa: E402
from milo_portal.models import Agent, Candidate, Event, ImportBatch, ImportRow, Message, User, new_token  # noqa: E402

GOALS = {"review_s": 2.0, "create_s": 3.0, "ratio": 0.4, "memory_mb": 300}


@dataclass
class Contact:
    """A created candidate's contact, as the raw insert reads it."""

    email: str | None
    phone: str | None
    timezone: str


@dataclass
class Row:
    """A created candidate, read back for the raw insert."""

    name: str | None
    contact: Contact


def export(rows: int, seed: int = 7) -> bytes:
    """A job board export: name, e-mail, mobile, source; a few bad and repeated rows."""
    rnd = random.Random(seed)
    lines = ["Full name;E-mail address;Mobile;Job board"]
    for i in range(rows):
        email = f"person{i}@example.com" if rnd.random() > 0.01 else f"person{i}-at-example.com"
        if i and rnd.random() < 0.01:
            email = f"person{i - 1}@example.com"
        phone = f"+1 415 555 {i % 10000:04d}" if rnd.random() < 0.5 else ""
        lines.append(f"Person {i};{email};{phone};{rnd.choice(['indeed', 'linkedin', 'fair'])}")
    return ("\r\n".join(lines) + "\r\n").encode()


def peak_mb() -> float:
    """This process's peak resident memory since it started or since ``reset_peak``, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (the bench measures memory on Linux)")


def reset_peak() -> None:
    """Start the peak resident memory from the current resident memory (Linux 4.0 and later)."""
    Path("/proc/self/clear_refs").write_text("5")


def raw_insert(agent_id: int, user_id: int, batch_id: int, rows: list, moment) -> float:
    """Seconds for a plain Core bulk insert of these rows' candidates, events, invites, report rows."""
    started = time.perf_counter()
    with db.engine.begin() as conn:
        ids = conn.execute(insert(Candidate).returning(Candidate.id), [dict(
            agent_id=agent_id, name=r.name, email=r.contact.email, phone=r.contact.phone, timezone=r.contact.timezone,
            channel="email", source="bulk", token=new_token(), stage="added", deadline_at=moment + timedelta(days=7),
            created_by_id=user_id, created_at=moment, updated_at=moment) for r in rows]).scalars().all()
        conn.execute(insert(Event), [dict(candidate_id=i, agent_id=agent_id, type="added", at=moment, detail="bulk",
                                          actor_id=user_id) for i in ids])
        conn.execute(insert(Message), [dict(candidate_id=i, kind="invite", step=1, channel="email", manual=True,
                                            immediate=False, status="scheduled", scheduled_for=moment, attempts=0,
                                            created_at=moment) for i in ids])
        conn.execute(insert(ImportRow), [dict(batch_id=batch_id, filename="raw.csv", row_number=n, outcome="created",
                                              candidate_id=i) for n, i in enumerate(ids)])
    return time.perf_counter() - started


def run(size: int, url: str | None, folder: Path) -> dict:
    """Review and create ``size`` rows on a fresh database; return the figures."""
    url = url or f"sqlite:///{folder / f'ingest-{size}.sqlite3'}"
    app = create_app(TestConfig, database_url=url)
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            with db.engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
        upgrade()
        user = User(email="bench@example.com", name="Bench")
        user.set_password("bench-password-123")
        agent, other = Agent(title="Picker", company="Acme"), Agent(title="Raw", company="Acme")
        db.session.add_all([user, agent, other])
        db.session.flush()
        raw_batch = ImportBatch(agent_id=other.id, status=ImportBatch.DONE, filenames="raw.csv")
        db.session.add(raw_batch)
        db.session.commit()
        raw_batch_id, other_id, user_id = raw_batch.id, other.id, user.id
        data, moment, root = export(size), now(), folder / f"uploads-{size}"

        started = time.perf_counter()
        batch = services.start_upload(db.session, root, agent, [("export.csv", data)], moment, user_id, "email")
        read_s = time.perf_counter() - started
        mapping = services.parse_mapping(batch.mapping)
        result = services.review(db.session, batch, services.load_items(root, batch), mapping, "email")
        review_s = time.perf_counter() - started
        fresh_count = result.new
        del result  # the request is over: the create works from the files alone
        db.session.commit()
        before_create_mb = peak_mb()
        reset_peak()

        chunks: list[float] = []
        timed = services._create_chunk

        def chunk(*args, **kwargs):
            began = time.perf_counter()
            try:
                return timed(*args, **kwargs)
            finally:
                chunks.append(time.perf_counter() - began)

        services._create_chunk = chunk
        started = time.perf_counter()
        done = services.confirm(db.session, root, batch, mapping, "email", True, moment, user_id)
        confirm_s = time.perf_counter() - started  # a large batch is only queued here
        # ...and created by the scheduler's worker, measured to the end (one uninterrupted call).
        services.work_queued(db.session, root, moment, "bench", budget=None)
        db.session.refresh(done.batch)
        create_s = time.perf_counter() - started
        create_mb = peak_mb()  # before the raw insert below adds its own
        memory_mb = max(before_create_mb, create_mb)
        services._create_chunk = timed
        created = done.batch.created_count
        assert created == fresh_count, (created, fresh_count)
        db.session.commit()
        fresh = [Row(name, Contact(email, phone, zone)) for name, email, phone, zone in db.session.execute(
            select(Candidate.name, Candidate.email, Candidate.phone, Candidate.timezone)
            .where(Candidate.import_batch_id == done.batch.id).order_by(Candidate.id))]
        db.session.commit()
        raw_s = raw_insert(other_id, user_id, raw_batch_id, fresh, moment)
        figures = dict(size=size, created=created, confirm_s=confirm_s, read_s=read_s, review_s=review_s, create_s=create_s, raw_s=raw_s,
                       ratio=(created / create_s) / (len(fresh) / raw_s), chunk_max_ms=max(chunks) * 1000,
                       chunk_p50_ms=statistics.median(chunks) * 1000, chunks=len(chunks), memory_mb=memory_mb,
                       create_mb=create_mb, dialect=db.engine.dialect.name)
        db.session.remove()
        db.engine.dispose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--database-url")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child run: one size, figures as JSON
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            print("FIGURES " + json.dumps(run(args.one, args.database_url, Path(tmp))), flush=True)
        return
    for size in args.rows:
        # A process per size: its memory is that upload's alone, not what an earlier size left.
        child = [sys.executable, __file__, "--one", str(size)]
        if args.database_url:
            child += ["--database-url", args.database_url]
        done = subprocess.run(child, capture_output=True, text=True)
        if done.returncode:
            sys.exit(done.stderr)
        f = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("FIGURES "))[8:])
        print(f"{f['dialect']} {f['size']:,} rows ({f['created']:,} created):")
        print(f"  review  {f['review_s']:6.2f} s (reading the file {f['read_s']:.2f} s)"
              f"   goal < {GOALS['review_s']} s at 10,000 rows")
        print(f"  confirm {f['confirm_s']:6.2f} s (the request: the batch is queued for the scheduler's worker)")
        print(f"  create  {f['create_s']:6.2f} s, {f['created'] / f['create_s']:7.0f} rows/s, invites queued,"
              f" {f['chunks']} chunks: longest {f['chunk_max_ms']:.0f} ms, median {f['chunk_p50_ms']:.0f} ms"
              f"   goal < {GOALS['create_s']} s at 10,000 rows")
        print(f"  raw     {f['raw_s']:6.2f} s, {f['created'] / f['raw_s']:7.0f} rows/s (Core bulk insert, one transaction)")
        print(f"  ratio   {f['ratio']:6.2f} create rows/s ÷ raw rows/s   goal >= {GOALS['ratio']}")
        print(f"  memory  {f['memory_mb']:6.0f} MB peak resident through the review and the create"
              f" (the create's own peak {f['create_mb']:.0f} MB)   goal < {GOALS['memory_mb']} MB at 50,000 rows")


if __name__ == "__main__":
    main()
