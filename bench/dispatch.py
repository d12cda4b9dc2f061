"""Dispatcher throughput and planner time (not a test).

Usage: .venv/bin/python bench/dispatch.py [--messages 2000] [--rounds 3] [--candidates 100000]
       [--database-url URL]

1. Delivers --messages due invites to a local SMTP server (aiosmtpd) with ``dispatch`` and
   compares with a bare smtplib loop sending the same number of messages of the same size
   over one connection. Target: ratio >= 0.5.
   The floor builds each message with the standard library's EmailMessage (text + HTML)
   and sends it over one connection; the wire-only figure resends one pre-built message.
   The three run interleaved, --rounds times (fresh due invites for each dispatch run), and
   it prints each figure's median and minimum and the ratio of the medians: on a shared
   machine one run of each, minutes apart, measured the machine as much as the code. The
   CPU time per message (this process's, the SMTP sink's thread included, the same for all
   three) and its ratio are printed too: other work on the machine barely moves them.
2. Times the planner over --candidates demo candidates (a first pass that inserts the due
   follow-ups, then a steady-state pass). Target: under 2 s.
"""
from __future__ import annotations

import argparse
import dataclasses
import smtplib
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flask_migrate import upgrade  # noqa: E402

from milo_portal import create_app  # noqa: E402
from milo_portal.config import TestConfig  # noqa: E402
from milo_portal.demo import create_demo_candidates, create_demo_data  # noqa: E402
from milo_portal.extensions import db  # noqa: E402
from milo_portal.followups.services import dispatch, plan  # noqa: E402
from milo_portal.messaging import channels  # noqa: E402
from milo_portal.messaging.services import prepare_delivery  # noqa: E402
from milo_portal.models import Message, MessageStatus  # noqa: E402
from milo_portal.settings.services import get_settings  # noqa: E402
from tests.conftest import at, make_due_invites  # noqa: E402
from tests.servers import SmtpSink  # noqa: E402

T = at("2026-11-30T10:00:00")  # a Monday morning, inside the default window


def fresh_app(url: str | None):
    url = url or f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3"
    app = create_app(TestConfig, database_url=url)
    app.config["MILO_RATE_EMAIL"] = 10**9
    return app


def stdlib_email(email: channels.Email) -> EmailMessage:
    """The floor: what any sender must do per message, with nothing but the standard library."""
    msg = EmailMessage()
    msg["Subject"], msg["To"] = email.subject, email.to
    msg["From"] = formataddr(email.sender) if isinstance(email.sender, tuple) else email.sender
    msg["Message-ID"] = make_msgid(domain=email.message_id_domain)
    msg.set_content(email.text)
    msg.add_alternative(email.html, subtype="html")
    return msg


class Timer:
    """Wall-clock and CPU seconds (of this process: the SMTP sink's thread included) of a run."""

    def __enter__(self) -> "Timer":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def _wire(port: int, count: int, raw: bytes) -> Timer:
    """Resend one pre-built message over one connection (the wire alone)."""
    with Timer() as timer:
        conn = smtplib.SMTP("127.0.0.1", port, timeout=15)
        for i in range(count):
            conn.sendmail("jobs@acme.example", [f"p{i}@example.com"], raw)
        conn.quit()
    return timer


def _floor(port: int, emails: list[channels.Email]) -> Timer:
    """Build each message with EmailMessage (text + HTML) and send it over one connection."""
    with Timer() as timer:
        conn = smtplib.SMTP("127.0.0.1", port, timeout=15)
        for email in emails:
            conn.send_message(stdlib_email(email))
        conn.quit()
    return timer


def _dispatch(count: int, round_no: int) -> Timer:
    """One dispatch over ``count`` fresh due invites (claim, render, send, record)."""
    make_due_invites(count, T, prefix=f"r{round_no}p", title="Bench")
    with Timer() as timer:
        result = dispatch(db.session, T)
    assert len(result.sent) == count, result.summary()
    return timer


def _figures(label: str, count: int, runs: list[Timer]) -> str:
    rates = [count / run.wall for run in runs]
    cpu_ms = statistics.median(run.cpu for run in runs) * 1000 / count
    return (f"{label}: median {statistics.median(rates):6.0f}  min {min(rates):6.0f}  messages/s"
            f"  (runs: {', '.join(f'{v:.0f}' for v in rates)}); CPU {cpu_ms:.2f} ms a message")


def throughput(app, count: int, rounds: int) -> None:
    sink = SmtpSink().start()
    with app.app_context():
        upgrade()
        state = app.extensions["mail"]
        state.server, state.port = "127.0.0.1", sink.port
        app.config.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=sink.port)
        settings = get_settings(db.session)
        settings.sender_email, settings.company_name = "jobs@acme.example", "Acme"
        db.session.commit()
        # The content of the bare loops: one invite rendered by the app beforehand (rendering
        # is not timed there), sent to as many addresses as a dispatch run has.
        make_due_invites(1, T, prefix="sample", title="Bench")
        sample = db.session.scalars(db.select(Message).limit(1)).first()
        delivery = prepare_delivery(db.session, sample, settings)
        sample.status = MessageStatus.CANCELLED  # the sample is not sent by the runs below
        db.session.commit()
        emails = [dataclasses.replace(delivery.email, to=f"p{i}@example.com") for i in range(count)]
        raw = channels.build_email(delivery.email).as_bytes()

        wire, bare, ours = [], [], []
        # Interleaved rounds on one machine (two shared cores: its speed drifts over a run):
        # each round times the wire, the floor and dispatch back to back, the floor and
        # dispatch in turn first, and the ratio is of the medians.
        for round_no in range(rounds):
            wire.append(_wire(sink.port, count, raw))
            order = ("floor", "dispatch") if round_no % 2 == 0 else ("dispatch", "floor")
            for what in order:
                if what == "floor":
                    bare.append(_floor(sink.port, emails))
                else:
                    ours.append(_dispatch(count, round_no))
            sink.wait_for(3 * count, timeout=60)
            sink.messages.clear()
            print(f"round {round_no + 1}: wire {count / wire[-1].wall:.0f}, bare loop {count / bare[-1].wall:.0f}, "
                  f"dispatch {count / ours[-1].wall:.0f} messages/s (ratio {bare[-1].wall / ours[-1].wall:.2f})",
                  flush=True)
    sink.stop()
    print(_figures("smtplib, one connection, one pre-built message resent (the wire alone)", count, wire))
    print(_figures("bare smtplib loop, one connection, each built with EmailMessage (text + HTML) and sent",
                   count, bare))
    print(_figures(f"dispatch (claim, render, send, record), {count} due invites a run", count, ours))
    median = {name: statistics.median(run.wall for run in runs) for name, runs in
              (("wire", wire), ("bare", bare), ("ours", ours))}
    rounds_ratios = [b.wall / o.wall for o, b in zip(ours, bare)]
    cpu_ratio = statistics.median(run.cpu for run in bare) / statistics.median(run.cpu for run in ours)
    print(f"ratio dispatch / bare loop, of the medians = {median['bare'] / median['ours']:.2f}  (target >= 0.5); "
          f"per round: min {min(rounds_ratios):.2f}, median {statistics.median(rounds_ratios):.2f}; "
          f"of CPU time (steadier on a shared machine) {cpu_ratio:.2f}; "
          f"dispatch / wire alone = {median['wire'] / median['ours']:.2f}")


def planner(app, candidates: int) -> None:
    with app.app_context():
        upgrade()
        create_demo_data(db.session)
        started = time.perf_counter()
        create_demo_candidates(db.session, candidates, 11, T)
        print(f"demo data: {candidates} candidates in {time.perf_counter() - started:.1f} s")
        db.session.remove()
        for label in ("first pass (inserts what is due)", "steady state"):
            started = time.perf_counter()
            result = plan(db.session, T + timedelta(hours=1))
            elapsed = time.perf_counter() - started
            print(f"planner, {label}: {elapsed:.2f} s — {result.summary()}  (target < 2 s)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--candidates", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the wire, floor and dispatch")
    parser.add_argument("--database-url", help="an empty database to use (default: SQLite in a temporary folder)")
    args = parser.parse_args()
    throughput(fresh_app(args.database_url), args.messages, args.rounds)
    planner(fresh_app(None if not args.database_url else args.database_url), args.candidates)


if __name__ == "__main__":
    main()
