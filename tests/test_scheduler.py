"""The in-process scheduler end to end, and when it starts."""
from __future__ import annotations

import gc
import time

import click
import pytest

from milo_portal.extensions import db, scheduler
from milo_portal.followups.scheduler import JOB_ID, init_scheduler, should_start
from milo_portal.models import Message, MessageStatus
from tests.conftest import make_agent


def test_an_invite_added_inside_the_window_arrives_within_two_ticks(app, auth, client, smtp, team_settings):
    # Every hour of every day is inside the window, whatever the real clock says.
    team_settings.window_start_minute, team_settings.window_end_minute = 0, 24 * 60
    team_settings.send_days = team_settings.initial_send_days = "1,2,3,4,5,6,7"
    db.session.commit()
    agent = make_agent()
    tick = 2
    app.config["MILO_TICK_SECONDS"] = tick
    init_scheduler(app, force=True)
    try:
        job = scheduler.get_job(JOB_ID)
        assert job is not None and job.coalesce and job.max_instances == 1
        started = time.monotonic()
        response = client.post("/candidates/new", {"agent_id": str(agent.id), "name": "Ada", "email": "ada@example.com",
                                                   "phone": "", "timezone": "Asia/Tokyo", "channel": "email",
                                                   "deadline": "", "invite_now": "y"})
        assert response.status_code == 302
        received = smtp.wait_for(1, timeout=2 * tick + 1)  # two ticks, and a little slack for a busy machine
        assert received[0].rcpt_tos == ["ada@example.com"]
        assert time.monotonic() - started < 2 * tick + 1
    finally:
        scheduler.remove_job(JOB_ID)
        scheduler.shutdown(wait=True)
    db.session.expire_all()
    assert db.session.query(Message).one().status == MessageStatus.SENT


def test_one_job_with_a_fixed_id_even_when_initialised_twice(app):
    app.config["MILO_TICK_SECONDS"] = 3600
    try:
        init_scheduler(app, force=True)
        init_scheduler(app, force=True)
        assert [j.id for j in scheduler.get_jobs()] == [JOB_ID]
    finally:
        scheduler.remove_job(JOB_ID)
        scheduler.shutdown(wait=True)


def test_it_does_not_start_in_tests_or_cli_commands(app):
    app.config["MILO_SCHEDULER"] = True
    assert should_start(app) is False  # testing
    app.testing = False
    try:
        with click.Context(click.Command("upgrade")):
            assert should_start(app) is False
        with click.Context(click.Command("run")):
            assert should_start(app) is True
        app.config["MILO_SCHEDULER"] = False
        with click.Context(click.Command("run")):
            assert should_start(app) is False
    finally:
        app.testing = True


@pytest.mark.parametrize("reloader_child,expected", [(False, False), (True, True)])
def test_the_debug_reloader_starts_it_once(app, monkeypatch, reloader_child, expected):
    app.testing, app.debug = False, True
    app.config["MILO_SCHEDULER"] = True
    monkeypatch.setenv("WERKZEUG_RUN_MAIN", "true") if reloader_child else monkeypatch.delenv("WERKZEUG_RUN_MAIN", raising=False)
    try:
        with click.Context(click.Command("run")):
            assert should_start(app) is expected
    finally:
        app.testing, app.debug = True, False


def test_the_first_run_message_starts_no_scheduler_and_names_the_port(app, database_url, monkeypatch, capsys):
    """Defect: `make run` printed its login hint from a short process whose app started the
    scheduler (no CLI context looked like a server), so a tick could claim messages and be
    cut off by the process's exit; and it always named port 5000."""
    from milo_portal import firstrun
    from milo_portal.followups import scheduler as clock

    started = []
    monkeypatch.setattr(clock.scheduler, "start", lambda *a, **k: started.append("start"))
    monkeypatch.setattr(clock.scheduler, "add_job", lambda *a, **k: started.append("job"))
    monkeypatch.setenv("MILO_SCHEDULER", "1")  # as a server would have it; restored after the test
    monkeypatch.setenv("MILO_DATABASE_URL", database_url)
    monkeypatch.setenv("PORT", "8080")
    db.session.commit()
    firstrun.main()
    gc.collect()  # a connection it left open would warn here (ResourceWarning is an error)
    assert started == []
    assert "starting on http://127.0.0.1:8080" in capsys.readouterr().out
