"""Fault proofs on the deployment shape (gunicorn, workers each ticking, a real SMTP server,
the test database): a SIGTERM mid-dispatch, a SIGKILL mid-dispatch and a restart, and
public completions plus manual adds, API adds and a bulk upload arriving while the workers
send."""
from __future__ import annotations

import asyncio
import os

import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Callable

import requests
from sqlalchemy import select

from milo_portal.clock import now as wall_clock
from milo_portal.extensions import db
from milo_portal.models import Candidate, Message, MessageStatus, Stage
from tests.conftest import CSRF_RE, PASSWORD, make_agent, make_due_invites, make_user
from tests.servers import SmtpSink, free_port

ROOT = Path(__file__).resolve().parent.parent


class SlowSink(SmtpSink):
    """An SMTP server that takes ``delay`` seconds to accept each message."""

    delay = 0.3

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


def _open_all_week(team_settings) -> None:
    team_settings.window_start_minute, team_settings.window_end_minute = 0, 24 * 60
    team_settings.send_days = team_settings.initial_send_days = "1,2,3,4,5,6,7"
    db.session.commit()


def _server(database_url: str, smtp_port: int, workers: int = 1, **extra) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MILO_", "MAIL_", "TWILIO_"))}
    env.update(MILO_DATABASE_URL=database_url, MILO_SECRET_KEY="x" * 32, MILO_SCHEDULER="1", MILO_TICK_SECONDS="1",
               MILO_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}", MAIL_SERVER="127.0.0.1", MAIL_PORT=str(smtp_port),
               MILO_WORKERS=str(workers), MILO_BIND=f"127.0.0.1:{port}", PYTHONUNBUFFERED="1", **extra)
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def _client() -> requests.Session:
    """An HTTP client whose every request opens a connection of its own.

    gunicorn closes a connection left idle for its keep-alive (2 s). A client thread that a
    busy 2-core machine leaves unscheduled that long reuses the connection just as the server
    closes it, and gets "Connection aborted" for a request the server never read (a browser
    sends such a request again; ``requests`` does not). These tests are about the database
    under concurrent writers, not about keep-alive timing."""
    http = requests.Session()
    http.headers["Connection"] = "close"
    return http


def _read_output(proc: subprocess.Popen) -> Callable[[], str]:
    """Read the server's output as it comes; the returned function waits for the exit and gives it all.

    A pipe nobody reads holds 64 KB: past that, every worker thread that logs a line (one per
    request) blocks on the write and the whole server stands still.
    """
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()

    def finish(timeout: float = 60) -> str:
        proc.wait(timeout=timeout)
        reader.join(timeout=timeout)
        proc.stdout.close()
        return "".join(lines)

    return finish


def _statuses() -> Counter:
    db.session.expire_all()
    counted = Counter(m.status for m in db.session.query(Message))
    db.session.commit()
    return counted


def test_sigterm_mid_dispatch_finishes_the_send_and_hands_the_other_claims_back(app, database_url, team_settings):
    _open_all_week(team_settings)
    make_due_invites(40, wall_clock() - timedelta(minutes=1), prefix="t")
    sink = SlowSink().start()
    proc, _url = _server(database_url, sink.port)
    try:
        sink.wait_for(3, timeout=90)
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        sink.stop()
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output
    counted = _statuses()
    # Nothing is left claimed: what went is recorded as sent, the rest is scheduled again.
    assert set(counted) <= {MessageStatus.SENT, MessageStatus.SCHEDULED}, counted
    assert counted[MessageStatus.SENT] == len(sink.messages) and counted[MessageStatus.SCHEDULED] > 0
    assert Counter(r.rcpt_tos[0] for r in sink.messages).most_common(1)[0][1] == 1
    unsent = db.session.query(Message).filter_by(status=MessageStatus.SCHEDULED).all()
    assert all(m.attempts == 0 and m.lease_until is None for m in unsent)  # handed back, not counted as tries
    db.session.commit()


def test_sigkill_mid_dispatch_then_restart_loses_and_doubles_nothing(app, database_url, team_settings):
    _open_all_week(team_settings)
    make_due_invites(40, wall_clock() - timedelta(minutes=1), prefix="k")
    slow = SlowSink().start()
    proc, _url = _server(database_url, slow.port)
    try:
        slow.wait_for(3, timeout=90)
        os.killpg(proc.pid, signal.SIGKILL)  # master and worker at once: no shutdown code runs
        proc.communicate(timeout=30)
    finally:
        slow.stop()
    first = list(slow.messages)
    after_kill = _statuses()
    assert after_kill[MessageStatus.SENDING] >= 1  # the claims of the killed worker
    fast = SmtpSink().start()
    proc, _url = _server(database_url, fast.port)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and _statuses()[MessageStatus.SCHEDULED]:
            time.sleep(0.3)
        time.sleep(2.5)  # more ticks: nothing may go twice
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
        fast.stop()
    received = Counter(r.rcpt_tos[0] for r in first + list(fast.messages))
    assert received and max(received.values()) == 1, received  # nothing doubled
    counted = _statuses()
    # Nothing lost: every message went, or it was claimed by the killed worker and waits for a
    # recruiter as "sending" (then "in doubt" when its lease ends), never re-sent on its own.
    assert counted[MessageStatus.SENT] + counted[MessageStatus.SENDING] + counted[MessageStatus.IN_DOUBT] == 40, counted
    assert counted[MessageStatus.SENDING] + counted[MessageStatus.IN_DOUBT] <= after_kill[MessageStatus.SENDING]
    sent = {m.candidate.email for m in db.session.query(Message).filter_by(status=MessageStatus.SENT)}
    assert sent <= set(received) and len(received) - len(sent) <= after_kill[MessageStatus.SENDING]
    db.session.commit()
    assert "Traceback" not in output, output


def _csrf(page: str) -> str:
    match = CSRF_RE.search(page)
    assert match, page[:500]
    return match.group(1) or match.group(2)


def test_gunicorn_with_ticking_workers_takes_public_completions_and_manual_adds_at_once(app, database_url, team_settings):
    """Two workers tick every second while 50 candidates complete through the public pages
    and a recruiter adds 60 more: every invite goes exactly once, no 5xx, no lock error."""
    _open_all_week(team_settings)
    make_user()
    agent = make_agent("Concurrency", questions=("One?", "Two?"))
    finishing = [Candidate(agent_id=agent.id, name=f"F{i}", email=f"f{i}@example.com", stage=Stage.INVITED,
                           timezone="UTC", deadline_at=wall_clock() + timedelta(days=3)) for i in range(50)]
    db.session.add_all(finishing)
    db.session.commit()
    tokens, agent_id = [(c.token, c.email) for c in finishing], agent.id
    db.session.commit()
    sink = SmtpSink().start()
    proc, url = _server(database_url, sink.port, workers=2)
    output_of = _read_output(proc)
    statuses: list[int] = []
    errors: list[str] = []

    def complete(token: str, email: str) -> None:
        http = _client()
        try:
            page = http.get(f"{url}/i/{token}", timeout=60)
            statuses.append(page.status_code)
            # The candidate's forms need no CSRF token: the link token is their credential.
            statuses.append(http.post(f"{url}/i/{token}/seen", timeout=60).status_code)
            r = http.post(f"{url}/i/{token}/start", data={"name": "Fin", "email": email},
                          timeout=60, allow_redirects=False)
            statuses.append(r.status_code)
            for n in (1, 2):
                r = http.post(f"{url}/i/{token}/q/{n}", data={"answer": f"Answer {n}"},
                              timeout=60, allow_redirects=False)
                statuses.append(r.status_code)
            statuses.append(http.post(f"{url}/i/{token}/submit", timeout=60,
                                      allow_redirects=False).status_code)
        except Exception as err:  # reported below
            errors.append(f"{token[:6]}: {err!r}")

    def add_many(start: int) -> None:
        http = _client()
        try:
            csrf = _csrf(http.get(f"{url}/login", timeout=60).text)
            r = http.post(f"{url}/login", data={"csrf_token": csrf, "email": "rita@example.com", "password": PASSWORD},
                          timeout=60, allow_redirects=False)
            statuses.append(r.status_code)
            csrf = _csrf(http.get(f"{url}/candidates/new", timeout=60).text)
            for i in range(start, start + 20):
                r = http.post(f"{url}/candidates/new", timeout=60, allow_redirects=False, data={
                    "csrf_token": csrf, "agent_id": str(agent_id), "name": f"New {i}", "email": f"new{i}@example.com",
                    "phone": "", "timezone": "UTC", "channel": "email", "deadline": "", "invite_now": "y"})
                statuses.append(r.status_code)
        except Exception as err:  # reported below
            errors.append(f"adds from {start}: {err!r}")

    try:
        for _ in range(120):  # wait until the workers answer
            try:
                requests.get(f"{url}/healthz", timeout=10)
                break
            except requests.RequestException:
                time.sleep(0.5)
        threads = [threading.Thread(target=complete, args=t) for t in tokens]
        threads += [threading.Thread(target=add_many, args=(s,)) for s in (0, 20, 40)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        deadline = time.monotonic() + 180  # two busy cores: give the workers' ticks time
        while len(sink.messages) < 60 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.5)  # more ticks in each worker: nothing may arrive twice
    finally:
        proc.send_signal(signal.SIGTERM)
        output = output_of()
        sink.stop()
    assert not errors, errors
    assert statuses and all(s < 500 for s in statuses), Counter(statuses)
    assert "database is locked" not in output and "Traceback" not in output, output[-3000:]
    assert Counter(r.rcpt_tos[0] for r in sink.messages) == Counter({f"new{i}@example.com": 1 for i in range(60)}), (
        _statuses(), output[-3000:])
    db.session.expire_all()
    done = db.session.query(Candidate).filter(Candidate.token.in_([t for t, _ in tokens]), Candidate.stage == Stage.COMPLETED).count()
    assert done == 50
    db.session.commit()



def _wait_until_up(url: str) -> None:
    for _ in range(120):
        try:
            requests.get(f"{url}/healthz", timeout=10)
            return
        except requests.RequestException:
            time.sleep(0.5)


def _logged_in(url: str, statuses: list[int]) -> tuple[requests.Session, str]:
    """A recruiter's HTTP session over the real login form, and its CSRF token."""
    http = _client()
    csrf = _csrf(http.get(f"{url}/login", timeout=60).text)
    r = http.post(f"{url}/login", data={"csrf_token": csrf, "email": "rita@example.com", "password": PASSWORD},
                  timeout=60, allow_redirects=False)
    statuses.append(r.status_code)
    return http, _csrf(http.get(f"{url}/candidates/uploads/new", timeout=60).text)


def test_gunicorn_with_ticking_workers_takes_api_and_bulk_arrivals_and_public_completions_at_once(
        app, database_url, team_settings):
    """Two workers tick every second while 100 candidates arrive through the JSON API, 100
    through a bulk upload (upload, review, confirm with "invite automatically", over HTTP as a
    recruiter) and 50 others complete their interviews: every invite reaches the mail server
    exactly once, no 5xx, no lock error, no traceback."""
    from milo_portal.api import services as keys
    from milo_portal.models import ImportBatch
    from tests.imports_files import csv_bytes

    _open_all_week(team_settings)
    make_user()
    agent = make_agent("Arrivals", questions=("One?", "Two?"))
    _key, raw_key = keys.create_key(db.session, "Load test", wall_clock(), None)
    finishing = [Candidate(agent_id=agent.id, name=f"F{i}", email=f"f{i}@example.com", stage=Stage.INVITED,
                           timezone="UTC", deadline_at=wall_clock() + timedelta(days=3)) for i in range(50)]
    db.session.add_all(finishing)
    db.session.commit()
    tokens, agent_id = [(c.token, c.email) for c in finishing], agent.id
    db.session.commit()
    sheet = csv_bytes([["Name", "Email"]] + [[f"Bulk {i}", f"bulk{i}@example.com"] for i in range(100)])
    expected = {f"api{i}@example.com" for i in range(100)} | {f"bulk{i}@example.com" for i in range(100)}
    sink = SmtpSink().start()
    proc, url = _server(database_url, sink.port, workers=2)
    output_of = _read_output(proc)
    statuses: list[int] = []
    errors: list[str] = []

    def complete(token: str, email: str) -> None:
        http = _client()
        try:
            page = http.get(f"{url}/i/{token}", timeout=60)
            statuses.append(page.status_code)
            # The candidate's forms need no CSRF token: the link token is their credential.
            statuses.append(http.post(f"{url}/i/{token}/seen", timeout=60).status_code)
            r = http.post(f"{url}/i/{token}/start", data={"name": "Fin", "email": email},
                          timeout=60, allow_redirects=False)
            statuses.append(r.status_code)
            for n in (1, 2):
                r = http.post(f"{url}/i/{token}/q/{n}", data={"answer": f"Answer {n}"},
                              timeout=60, allow_redirects=False)
                statuses.append(r.status_code)
            statuses.append(http.post(f"{url}/i/{token}/submit", timeout=60,
                                      allow_redirects=False).status_code)
        except Exception as err:  # reported below
            errors.append(f"{token[:6]}: {err!r}")

    def add_by_api(start: int) -> None:
        http = _client()
        http.headers["Authorization"] = f"Bearer {raw_key}"
        try:
            for i in range(start, start + 25):
                r = http.post(f"{url}/api/v1/agents/{agent_id}/candidates", timeout=60,
                              json={"name": f"Api {i}", "email": f"api{i}@example.com", "timezone": "UTC"})
                statuses.append(r.status_code)
                if r.status_code != 201:
                    errors.append(f"api{i}: {r.status_code} {r.text[:300]}")
        except Exception as err:  # reported below
            errors.append(f"api from {start}: {err!r}")

    def upload_in_bulk() -> None:
        try:
            http, csrf = _logged_in(url, statuses)
            r = http.post(f"{url}/candidates/uploads", timeout=60, allow_redirects=False,
                          data={"csrf_token": csrf, "agent_id": str(agent_id), "mode": "review", "channel": "email",
                                "invite": "1"}, files={"files": ("people.csv", sheet, "text/csv")})
            statuses.append(r.status_code)
            review_url = f"{url}{r.headers['Location']}" if r.headers["Location"].startswith("/") else r.headers["Location"]
            page = http.get(review_url, timeout=60)
            statuses.append(page.status_code)
            assert "bulk0@example.com" in page.text, page.text[:2000]  # the review lists the rows
            r = http.post(f"{review_url}/confirm", timeout=120, allow_redirects=False,
                          data={"csrf_token": _csrf(page.text), "channel": "email", "invite": "1"})
            statuses.append(r.status_code)
            statuses.append(http.get(review_url, timeout=60).status_code)
        except Exception as err:  # reported below
            errors.append(f"bulk upload: {err!r}")

    try:
        _wait_until_up(url)
        threads = [threading.Thread(target=complete, args=t) for t in tokens]
        threads += [threading.Thread(target=add_by_api, args=(s,)) for s in (0, 25, 50, 75)]
        threads.append(threading.Thread(target=upload_in_bulk))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        deadline = time.monotonic() + 180  # two busy cores: give the workers' ticks time
        while len(sink.messages) < len(expected) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.5)  # more ticks in each worker: nothing may arrive twice
    finally:
        proc.send_signal(signal.SIGTERM)
        output = output_of()
        sink.stop()
    assert not errors, errors
    assert statuses and all(s < 500 for s in statuses), Counter(statuses)
    assert "database is locked" not in output and "Traceback" not in output, output[-3000:]
    received = Counter(r.rcpt_tos[0] for r in sink.messages)
    assert received == Counter({email: 1 for email in expected}), (
        sorted(set(expected) - set(received))[:10], [e for e, n in received.items() if n > 1][:10], _statuses(),
        output[-3000:])
    db.session.expire_all()
    batch = db.session.scalars(select(ImportBatch)).one()
    assert (batch.status, batch.created_count) == (ImportBatch.DONE, 100)
    done = db.session.query(Candidate).filter(Candidate.token.in_([t for t, _ in tokens]), Candidate.stage == Stage.COMPLETED).count()
    assert done == 50
    db.session.commit()
