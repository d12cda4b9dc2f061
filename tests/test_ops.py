"""Health, metrics, structured logs, graceful stop and the "database newer than the code" check."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from flask_migrate import upgrade
from sqlalchemy import text

from milo_portal import create_app
from milo_portal.clock import now
from milo_portal.config import TestConfig
from milo_portal.extensions import db
from milo_portal.followups.services import dispatch
from milo_portal.models import Candidate, Message, MessageStatus, Stage
from milo_portal.ops import health, shutdown
from tests.conftest import at, make_agent, make_due_invites, use_smtp
from tests.servers import SmtpSink

ROOT = Path(__file__).resolve().parent.parent
T = at("2026-11-30T10:00:00")  # Monday 10:00 UTC, inside the window
TOKEN = "scrape-token-0123456789"


def _beat(when):
    with db.session.begin():
        health.beat(db.session, when, "test:1")


def test_healthz_reports_the_database_the_tick_and_the_outbox(app, client):
    app.config["MILO_SCHEDULER"] = True
    make_due_invites(3, now() - timedelta(minutes=15))
    _beat(now() - timedelta(seconds=20))
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json
    assert body["status"] == "ok" and body["database"] == "ok"
    assert 19 <= body["scheduler"]["last_tick_age_seconds"] < 120 and body["scheduler"]["stale"] is False
    assert body["outbox"]["due"] == 3 and 899 <= body["outbox"]["oldest_due_age_seconds"] < 1000
    assert body["backup"] == {"last_at": None, "last_size_bytes": None, "last_error": None}


def test_healthz_is_503_when_the_tick_is_stale_or_never_happened(app, client):
    app.config["MILO_SCHEDULER"] = True
    response = client.get("/healthz")
    assert response.status_code == 503 and response.json["status"] == "stale"
    _beat(now() - timedelta(seconds=app.config["MILO_HEALTH_MAX_TICK_AGE"] + 30))
    response = client.get("/healthz")
    assert response.status_code == 503 and response.json["scheduler"]["stale"] is True
    _beat(now())
    assert client.get("/healthz").status_code == 200
    # Without an in-process scheduler (cron runs `flask milo dispatch`) an old tick is reported, not fatal.
    app.config["MILO_SCHEDULER"] = False
    _beat(now() + timedelta(seconds=1))
    assert client.get("/healthz").status_code == 200


def test_healthz_is_503_when_the_database_is_down(tmp_path):
    broken = create_app(TestConfig, database_url=f"sqlite:///{tmp_path}/missing-dir/milo.sqlite3")
    response = broken.test_client().get("/healthz")
    assert response.status_code == 503 and response.json == {"status": "error", "database": "unreachable"}


def test_prometheus_metrics_need_a_login_or_the_scrape_token(app, client, user):
    from tests.conftest import Auth

    app.config["MILO_METRICS_TOKEN"] = TOKEN
    make_due_invites(2, now() - timedelta(minutes=12))
    assert client.get("/ops/metrics").status_code == 401
    assert client.get("/ops/metrics", headers={"Authorization": "Bearer wrong-token-0000000"}).status_code == 401
    response = client.get("/ops/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200 and response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    lines = dict(line.rsplit(" ", 1) for line in response.get_data(as_text=True).splitlines()
                 if line and not line.startswith("#"))
    assert float(lines["milo_outbox_oldest_due_age_seconds"]) >= 12 * 60
    assert float(lines["milo_outbox_due_messages"]) == 2
    assert float(lines['milo_outbox_messages{status="scheduled"}']) == 2
    assert float(lines["milo_database_up"]) == 1
    assert "milo_scheduler_last_tick_age_seconds" in lines and "milo_last_backup_timestamp_seconds" in lines
    app.config["MILO_METRICS_TOKEN"] = None  # no token configured: a bearer header opens nothing
    assert client.get("/ops/metrics", headers={"Authorization": "Bearer "}).status_code == 401
    Auth(client).login()
    assert client.get("/ops/metrics").status_code == 200


def test_the_recruiters_metrics_page_keeps_its_address(client, auth):
    assert client.get("/metrics").status_code == 200
    assert b"milo_outbox" not in client.get("/metrics").data


def _events(caplog, name):
    return [json.loads(r.getMessage()) for r in caplog.records
            if r.name == "milo.events" and json.loads(r.getMessage())["event"] == name]


def test_each_request_is_one_json_line_with_the_url_rule_not_the_token(app, client, caplog):
    caplog.set_level(logging.INFO, logger="milo.events")
    agent = make_agent()
    c = Candidate(agent_id=agent.id, name="Ada Lovelace", email="ada@example.com", stage=Stage.INVITED,
                  timezone="UTC", deadline_at=now() + timedelta(days=3))
    db.session.add(c)
    db.session.commit()
    client.get(f"/i/{c.token}")
    client.get("/no-such-page")
    line, missing = _events(caplog, "request")
    assert line["method"] == "GET" and line["path"] == "/i/<token>" and line["status"] == 200
    assert line["endpoint"] == "public.landing" or line["endpoint"].startswith("public.")
    assert isinstance(line["duration_ms"], float)
    assert missing["path"] == "(no route)" and missing["status"] == 404
    assert c.token not in caplog.text and "ada@example.com" not in caplog.text


def test_each_message_sent_or_failed_is_logged_with_ids_only(app, smtp, team_settings, caplog):
    caplog.set_level(logging.INFO, logger="milo.events")
    ids = make_due_invites(2, T)
    smtp.reject["p1@example.com"] = "550 5.1.1 <p1@example.com> no such user"
    result = dispatch(db.session, T)
    assert len(result.sent) == 1 and len(result.failed) == 1
    sent, = _events(caplog, "message_sent")
    failed, = _events(caplog, "message_failed")
    assert (sent["candidate_id"], sent["kind"], sent["channel"], sent["step"]) == (ids[0], "invite", "email", 1)
    assert failed["candidate_id"] == ids[1] and "error" in failed
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "milo.events")
    assert "example.com" not in logged and "P0" not in logged and "P1" not in logged


class StoppingSink(SmtpSink):
    """Receives a message, and the worker is told to shut down while it is being sent."""

    async def handle_DATA(self, server, session, envelope):
        shutdown.begin()
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture()
def stop_flag():
    shutdown.reset()
    yield
    shutdown.reset()


def test_on_shutdown_the_message_being_sent_finishes_and_the_other_claims_go_back(app, team_settings, stop_flag):
    make_due_invites(6, T)
    sink = StoppingSink().start()
    try:
        use_smtp(app, sink.port)
        result = dispatch(db.session, T)
    finally:
        sink.stop()
    assert len(result.sent) == 1 and len(sink.messages) == 1
    db.session.expire_all()
    messages = db.session.query(Message).order_by(Message.id).all()
    assert [m.status for m in messages] == [MessageStatus.SENT] + [MessageStatus.SCHEDULED] * 5
    assert [m.attempts for m in messages[1:]] == [0] * 5 and all(m.lease_until is None for m in messages)
    assert not dispatch(db.session, T + timedelta(minutes=1)).sent  # a stopping worker claims nothing more


def _future_database(tmp_path) -> str:
    url = f"sqlite:///{tmp_path}/future.sqlite3"
    other = create_app(TestConfig, database_url=url)
    with other.app_context():
        upgrade()
        with db.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
        db.engine.dispose()
    return url


def test_the_app_refuses_to_start_on_a_database_newer_than_the_code(app, tmp_path):
    url = _future_database(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILO_")}
    env.update(MILO_DATABASE_URL=url, MILO_SECRET_KEY="x" * 32, MILO_SCHEDULER="1")
    started = subprocess.run([sys.executable, "-c", "import wsgi"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=120)
    assert started.returncode == 3
    assert "refuses to start" in started.stderr and "0099_from_the_future" in started.stderr
    assert "a newer version has upgraded it" in started.stderr and "Traceback" not in started.stderr
    checked = subprocess.run([sys.executable, "-m", "flask", "--app", "milo_portal", "milo", "check-schema"], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=120)
    assert checked.returncode == 1 and "a newer version has upgraded it" in checked.stderr


def test_flask_run_refuses_a_database_newer_than_the_code_too(app, tmp_path):
    """Defect (trial): only the WSGI entry point checked; `flask run` served such a database
    and its scheduler wrote to it (a message's attempts went 0 -> 1)."""
    from tests.servers import free_port

    url = _future_database(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILO_")}
    env.update(MILO_DATABASE_URL=url, MILO_SECRET_KEY="x" * 32, MILO_SCHEDULER="1")
    served = subprocess.run([sys.executable, "-m", "flask", "--app", "milo_portal", "run", "--port", str(free_port())],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert served.returncode == 3, served.stderr[-2000:]
    assert "refuses to start" in served.stderr and "Traceback" not in served.stderr


def test_a_bad_setting_stops_the_app_with_one_line_naming_it_not_a_stack_trace(tmp_path):
    """Defect (trial): MILO_METRICS_TOKEN=short stopped start-up with a 44-line traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILO_")}
    env.update(MILO_DATABASE_URL=f"sqlite:///{tmp_path / 'x.sqlite3'}", MILO_SECRET_KEY="x" * 32,
               MILO_METRICS_TOKEN="short")
    for command in ([sys.executable, "-c", "import wsgi"],
                    [sys.executable, "-m", "flask", "--app", "milo_portal", "milo", "check-schema"]):
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr[-2000:]
        assert "cannot start: MILO_METRICS_TOKEN must be at least 16 characters" in done.stderr
        assert "Traceback" not in done.stderr


def test_the_schema_check_passes_on_this_versions_database(runner):
    result = runner.invoke(args=["milo", "check-schema"])
    assert result.exit_code == 0 and "one this version knows" in result.output


def test_two_workers_creating_a_missing_job_lease_at_once_do_not_collide(app):
    """A periodic job's lease row made by one worker while another makes it too: on
    PostgreSQL a get-then-insert failed the second with a duplicate key (seen under gunicorn)."""
    import threading

    from sqlalchemy import delete
    from sqlalchemy.orm import Session

    from milo_portal.models import JobLease
    from milo_portal.ops.jobs import take_until

    db.session.execute(delete(JobLease).where(JobLease.name == "race"))
    db.session.commit()
    moment = now()
    first = db.engine.connect()
    first_tx = first.begin()
    first.execute(JobLease.__table__.insert().values(name="race"))  # the other worker's insert, not yet committed
    outcome: list[object] = []

    def second_worker() -> None:
        with app.app_context(), Session(db.engine) as session:
            try:
                outcome.append(take_until(session, "race", "second", moment, moment + timedelta(hours=1)))
            except Exception as err:  # the failure this test guards against
                outcome.append(err)

    thread = threading.Thread(target=second_worker)
    thread.start()
    thread.join(0.5)  # it now waits on the first worker's row (PostgreSQL) or write lock (SQLite)
    first_tx.commit()
    first.close()
    thread.join(30)
    assert outcome == [True]
    assert db.session.get(JobLease, "race").holder == "second"
