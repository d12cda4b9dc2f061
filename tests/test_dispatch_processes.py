"""Several processes at once, crashes and outages — against a real SMTP server, on the
test database (SQLite, or PostgreSQL in CI)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from milo_portal.extensions import db
from milo_portal.followups.scheduler import run_once
from milo_portal.followups.services import dispatch
from milo_portal.models import Candidate, Message, MessageStatus
from tests.conftest import at, make_agent, make_due_invites, use_smtp
from tests.servers import SilentServer, SmtpSink

ROOT = Path(__file__).resolve().parent.parent
T = at("2026-11-30T10:00:00")  # Monday 10:00 UTC, inside the window


def _due_invites(n: int) -> list[int]:
    return make_due_invites(n, T)


def _cli_env(database_url: str, smtp_port: int, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MILO_", "MAIL_", "TWILIO_"))}
    env.update(MILO_DATABASE_URL=database_url, MILO_SECRET_KEY="x" * 32, MILO_SCHEDULER="0",
               MILO_PUBLIC_BASE_URL="https://jobs.example.test", MAIL_SERVER="127.0.0.1", MAIL_PORT=str(smtp_port),
               PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def _dispatch_process(env: dict, when: str = "2026-11-30T10:00:00+00:00") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flask", "--app", "milo_portal", "milo", "dispatch", "--at", when],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _two_dispatchers(database_url: str, expected: int):
    """Run two `flask milo dispatch` processes at once against one SMTP server."""
    sink = SmtpSink().start()
    try:
        env = _cli_env(database_url, sink.port)
        procs = [_dispatch_process(env) for _ in range(2)]
        outputs = [p.communicate(timeout=300)[0] for p in procs]
        assert all(p.returncode == 0 for p in procs), outputs
        sink.wait_for(expected)
        time.sleep(0.3)  # anything extra (a double send) would arrive now
        return outputs, list(sink.messages)
    finally:
        sink.stop()


def test_two_processes_dispatching_500_messages_send_each_exactly_once(app, database_url, team_settings):
    _due_invites(500)
    outputs, received = _two_dispatchers(database_url, 500)
    per_person = Counter(r.rcpt_tos[0] for r in received)
    assert len(received) == 500 and set(per_person.values()) == {1}
    db.session.expire_all()
    assert Counter(m.status for m in db.session.query(Message)) == {MessageStatus.SENT: 500}
    # Both processes did part of the work (or one was fast enough to take all: still once each).
    sent_counts = [int(o.split("sent ")[-1].split(",")[0]) for o in outputs]
    assert sum(sent_counts) == 500, outputs


def test_smtp_down_for_a_while_then_everything_goes_once(app, team_settings):
    ids = _due_invites(5)
    sink = SmtpSink()  # its port is chosen but nothing listens yet: the server is down
    use_smtp(app, sink.port, timeout=2)
    first_id = db.session.query(Message.id).filter_by(candidate_id=ids[0]).scalar()
    delays, attempts_seen, now = [], 0, T
    for _ in range(20):
        result = dispatch(db.session, now)
        # One failure stops the channel for the tick: the rest wait untried, no attempt wasted.
        assert not result.sent and len(result.retried) <= 1
        db.session.expire_all()
        first = db.session.get(Message, first_id)
        if first.attempts > attempts_seen:
            attempts_seen = first.attempts
            delays.append(first.scheduled_for - now)
        now = min(m.scheduled_for for m in db.session.query(Message))
        db.session.commit()
    assert attempts_seen >= 3
    assert delays == sorted(delays) and delays[-1] >= 4 * delays[0]  # growing backoff: 1, 2, 4... minutes
    assert all(m.status == MessageStatus.SCHEDULED for m in db.session.query(Message))
    db.session.commit()
    sink.start()
    try:
        result = dispatch(db.session, now + timedelta(hours=2))
        assert len(result.sent) == 5
        assert sorted(r.rcpt_tos[0] for r in sink.wait_for(5)) == sorted(f"p{i}@example.com" for i in range(5))
        assert not dispatch(db.session, now + timedelta(hours=3)).sent
    finally:
        sink.stop()
    assert db.session.get(Message, first_id).status == MessageStatus.SENT


def test_a_process_killed_between_claim_and_send_leaves_the_message_in_doubt(app, database_url, team_settings):
    ids = _due_invites(1)
    hung = SilentServer().start()  # accepts the connection, never answers: the send hangs
    try:
        proc = _dispatch_process(_cli_env(database_url, hung.port, MILO_SMTP_TIMEOUT="120"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            db.session.expire_all()
            if db.session.query(Message).one().status == MessageStatus.SENDING:
                break
            db.session.commit()
            time.sleep(0.05)
        db.session.commit()
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    finally:
        hung.stop()
    message = db.session.query(Message).one()
    assert message.status == MessageStatus.SENDING and message.lease_until is not None
    db.session.commit()
    sink = SmtpSink().start()
    try:
        use_smtp(app, sink.port)
        # Before the lease ends nothing happens; after it, "in doubt" — and never sent again on its own.
        dispatch(db.session, T + timedelta(minutes=1))
        db.session.expire_all()
        assert db.session.query(Message).one().status == MessageStatus.SENDING
        result = dispatch(db.session, T + timedelta(minutes=10))
        assert result.in_doubt == 1 and not result.sent
        for minutes in (20, 60, 600):
            assert not dispatch(db.session, T + timedelta(minutes=minutes)).sent
        time.sleep(0.2)
        assert sink.messages == []
    finally:
        sink.stop()
    db.session.expire_all()
    assert db.session.query(Message).one().status == MessageStatus.IN_DOUBT
    del ids


def test_a_tick_that_raises_does_not_stop_the_next(app, monkeypatch, caplog):
    from milo_portal.followups import services

    calls = {"n": 0}
    real = services.tick

    def flaky(session, now):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database hiccup")
        return real(session, now)

    monkeypatch.setattr(services, "tick", flaky)
    assert run_once(app) is False
    assert "Scheduler tick failed" in caplog.text and "database hiccup" in caplog.text
    assert run_once(app) is True


@pytest.mark.parametrize("rate", [3])
def test_the_per_minute_rate_bounds_a_tick_and_the_rest_follows(app, team_settings, rate):
    _due_invites(7)
    app.config["MILO_RATE_EMAIL"] = rate
    sink = SmtpSink().start()
    try:
        use_smtp(app, sink.port)
        assert len(dispatch(db.session, T).sent) == rate
        assert len(dispatch(db.session, T + timedelta(seconds=30)).sent) == 0  # still the same minute
        assert len(dispatch(db.session, T + timedelta(minutes=2)).sent) == rate
        assert len(dispatch(db.session, T + timedelta(minutes=4)).sent) == 1
    finally:
        sink.stop()


def test_two_planner_processes_racing_insert_each_follow_up_once(app, database_url, team_settings):
    """Both processes find the same 300 due reminders at the same instant; each goes in once."""
    agent = make_agent("Racer")
    invited = T - timedelta(hours=25)
    people = [Candidate(agent_id=agent.id, name=f"R{i}", email=f"r{i}@example.com", timezone="UTC",
                        stage="invited", invited_at=invited, deadline_at=T + timedelta(days=5)) for i in range(300)]
    db.session.add_all(people)
    db.session.commit()
    outputs, received = _two_dispatchers(database_url, 300)
    db.session.expire_all()
    reminders = db.session.query(Message).filter_by(kind="reminder").all()
    assert len(reminders) == 300 and {m.step for m in reminders} == {1}
    assert Counter(r.rcpt_tos[0] for r in received) == Counter({f"r{i}@example.com": 1 for i in range(300)})
    planned = [int(o.split("planned: ")[1].split(" reminder")[0]) if "reminder" in o.split("planned: ")[1].split(";")[0]
               else 0 for o in outputs]
    assert sum(planned) == 300, outputs


def test_gunicorn_with_two_workers_each_ticking_sends_each_message_once(app, database_url, team_settings):
    """The deployment shape: gunicorn, two workers, each with its own in-process scheduler."""
    team_settings.window_start_minute, team_settings.window_end_minute = 0, 24 * 60
    team_settings.send_days = team_settings.initial_send_days = "1,2,3,4,5,6,7"
    db.session.commit()
    from milo_portal.clock import now as wall_clock

    make_due_invites(200, wall_clock() - timedelta(minutes=1), prefix="g", title="Gunicorn")
    sink = SmtpSink().start()
    from tests.servers import free_port

    port = free_port()
    env = _cli_env(database_url, sink.port, MILO_SCHEDULER="1", MILO_TICK_SECONDS="1", MILO_WORKERS="2",
                   MILO_BIND=f"127.0.0.1:{port}")
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        received = sink.wait_for(200, timeout=60)
        time.sleep(2.5)  # two more ticks in each worker: nothing may arrive twice
        received = list(sink.messages)
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
        sink.stop()
    assert "Booting worker" in output and output.count("Booting worker") == 2, output
    assert Counter(r.rcpt_tos[0] for r in received) == Counter({f"g{i}@example.com": 1 for i in range(200)})
    db.session.expire_all()
    assert Counter(m.status for m in db.session.query(Message)) == {MessageStatus.SENT: 200}
