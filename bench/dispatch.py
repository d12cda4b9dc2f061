"""Dispatcher throughput and planner time (not a test).

Usage: .venv/bin/python bench/dispatch.py [--messages 2000] [--candidates 100000] [--database-url URL]

1. Delivers --messages due invites to a local SMTP server (aiosmtpd) with ``dispatch`` and
   compares with a bare smtplib loop sending the same number of messages of the same size
   over one connection. Target: ratio >= 0.5.
   The floor builds each message with the standard library's EmailMessage (text + HTML)
   and sends it over one connection; the wire-only figure resends one pre-built message.
2. Times the planner over --candidates demo candidates (a first pass that inserts the due
   follow-ups, then a steady-state pass). Target: under 2 s.
"""
from __future__ import annotations

import argparse
import dataclasses
import smtplib
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
from milo_portal.models import Message  # noqa: E402
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


def throughput(app, count: int) -> None:
    sink = SmtpSink().start()
    with app.app_context():
        upgrade()
        state = app.extensions["mail"]
        state.server, state.port = "127.0.0.1", sink.port
        app.config.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=sink.port)
        settings = get_settings(db.session)
        settings.sender_email, settings.company_name = "jobs@acme.example", "Acme"
        make_due_invites(count, T, title="Bench")
        # The same messages for the bare loops: rendered beforehand (rendering is not timed there).
        sample = db.session.scalars(db.select(Message).limit(1)).first()
        delivery = prepare_delivery(db.session, sample, settings)
        sample.subject = sample.body = sample.template_version_id = sample.variant = None
        db.session.commit()
        emails = [dataclasses.replace(delivery.email, to=f"p{i}@example.com") for i in range(count)]
        raw = channels.build_email(delivery.email).as_bytes()

        started = time.perf_counter()
        conn = smtplib.SMTP("127.0.0.1", sink.port, timeout=15)
        for i in range(count):
            conn.sendmail("jobs@acme.example", [f"p{i}@example.com"], raw)
        conn.quit()
        wire = count / (time.perf_counter() - started)
        sink.wait_for(count, timeout=60)
        sink.messages.clear()

        started = time.perf_counter()
        conn = smtplib.SMTP("127.0.0.1", sink.port, timeout=15)
        for email in emails:  # each message built with the standard library (text + HTML) and sent
            conn.send_message(stdlib_email(email))
        conn.quit()
        bare = count / (time.perf_counter() - started)
        sink.wait_for(count, timeout=60)
        sink.messages.clear()

        started = time.perf_counter()
        result = dispatch(db.session, T)
        elapsed = time.perf_counter() - started
        sink.wait_for(count, timeout=60)
        assert len(result.sent) == count, result.summary()
    sink.stop()
    ours = count / elapsed
    print(f"smtplib, one connection, one pre-built message resent: {wire:8.0f} messages/s (the wire alone)")
    print(f"bare smtplib loop, one connection, each built with EmailMessage (text + HTML) and sent: {bare:8.0f} messages/s")
    print(f"dispatch (claim, render, send, record): {ours:8.0f} messages/s  ({count} in {elapsed:.2f} s)")
    print(f"ratio dispatch / bare loop = {ours / bare:.2f}  (target >= 0.5); dispatch / wire alone = {ours / wire:.2f}")


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
    parser.add_argument("--database-url", help="an empty database to use (default: SQLite in a temporary folder)")
    args = parser.parse_args()
    throughput(fresh_app(args.database_url), args.messages)
    planner(fresh_app(None if not args.database_url else args.database_url), args.candidates)


if __name__ == "__main__":
    main()
