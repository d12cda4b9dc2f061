"""Retention: personal data is erased a set time after the interview ended, by the daily job,
in short units, keeping the anonymous events the metrics count."""
from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import event

from milo_portal.extensions import db
from milo_portal.models import Answer, AuditEntry, Candidate, Event, Message, MessageStatus, OpsSettings, Stage
from milo_portal.ops import jobs, retention
from tests.conftest import at, make_agent

NOW = at("2026-11-30T03:00:00")


def _person(agent, name: str, stage: str, ended_days_ago: float | None, events=("added", "invited", "clicked", "started")):
    """A candidate with a history: the funnel events, answers, a sent invite, and how it ended."""
    start = NOW - timedelta(days=400)
    c = Candidate(agent_id=agent.id, name=name, email=f"{name.lower()}@example.com", phone="+14155550100",
                  stage=stage, timezone="UTC", source_detail="linkedin", created_at=start)
    db.session.add(c)
    db.session.flush()
    for i, kind in enumerate(events):
        db.session.add(Event(candidate_id=c.id, agent_id=agent.id, type=kind, at=start + timedelta(hours=i)))
    db.session.add(Answer(candidate_id=c.id, position=1, question_text="Why us?", body=f"{name} says hi",
                          answered_at=start + timedelta(hours=5)))
    db.session.add(Message(candidate_id=c.id, kind="invite", step=1, channel="email", status=MessageStatus.SENT,
                           subject=f"Hello {name}", body=f"Dear {name}", scheduled_for=start, sent_at=start))
    if ended_days_ago is not None:
        end_type = {Stage.COMPLETED: "completed", Stage.EXPIRED: "expired", Stage.OPTED_OUT: "opted_out"}[stage]
        db.session.add(Event(candidate_id=c.id, agent_id=agent.id, type=end_type,
                             at=NOW - timedelta(days=ended_days_ago)))
        if stage == Stage.COMPLETED:
            c.completed_at = NOW - timedelta(days=ended_days_ago)
    db.session.commit()
    return c


def _history():
    agent = make_agent()
    people = {
        "Old": _person(agent, "Old", Stage.COMPLETED, 200),
        "Expired": _person(agent, "Expired", Stage.EXPIRED, 181),
        "Optedout": _person(agent, "Optedout", Stage.OPTED_OUT, 180.01),
        "Recent": _person(agent, "Recent", Stage.COMPLETED, 100),
        "Almost": _person(agent, "Almost", Stage.OPTED_OUT, 179.9),
        "Live": _person(agent, "Live", Stage.STARTED, None),
    }
    # Expired long ago, then given more time by a recruiter, and expired again recently.
    again = _person(agent, "Again", Stage.EXPIRED, 300)
    db.session.add(Event(candidate_id=again.id, agent_id=agent.id, type="deadline_extended", at=NOW - timedelta(days=290)))
    db.session.add(Event(candidate_id=again.id, agent_id=agent.id, type="expired", at=NOW - timedelta(days=20)))
    db.session.commit()
    people["Again"] = again
    return people


def _funnel():
    """What the metrics count: events by type, erasures aside."""
    db.session.expire_all()
    return Counter(t for (t,) in db.session.query(Event.type).filter(Event.type != "erased"))


def test_the_daily_job_erases_exactly_the_candidates_past_the_limit_and_keeps_their_events(app):
    people = _history()
    before = _funnel()
    assert jobs.daily(db.session, NOW, "test:1") is True
    db.session.expire_all()
    erased = {name for name, c in people.items() if db.session.get(Candidate, c.id).erased_at is not None}
    assert erased == {"Old", "Expired", "Optedout"}
    for name in erased:
        c = db.session.get(Candidate, people[name].id)
        assert (c.name, c.email, c.phone, c.source_detail) == (None, None, None, None)
        assert c.erased_at == NOW and c.stage in Stage.TERMINAL
        assert db.session.query(Answer).filter_by(candidate_id=c.id).count() == 0
        assert db.session.query(Message).filter_by(candidate_id=c.id).one().body is None
        assert db.session.query(Event).filter_by(candidate_id=c.id, type="erased").count() == 1
    kept = db.session.get(Candidate, people["Recent"].id)
    assert kept.name == "Recent" and db.session.query(Answer).filter_by(candidate_id=kept.id).count() == 1
    assert _funnel() == before  # every anonymous event is still there for the metrics
    entry, = db.session.query(AuditEntry).filter_by(kind="retention_erased").all()
    assert entry.detail.startswith("3 candidate(s) erased") and entry.actor == "system"
    # Once a day: the next tick the same day does nothing; the next day "Almost" is past the limit too.
    assert jobs.daily(db.session, NOW + timedelta(hours=1), "test:2") is False
    assert jobs.daily(db.session, NOW + timedelta(days=1, minutes=1), "test:2") is True
    db.session.expire_all()
    erased = {name for name, c in people.items() if db.session.get(Candidate, c.id).erased_at is not None}
    assert erased == {"Old", "Expired", "Optedout", "Almost"}


def test_the_limit_is_the_teams_setting(app):
    people = _history()
    db.session.merge(OpsSettings(id=1, retention_days=90))
    db.session.commit()
    jobs.daily(db.session, NOW, "test:1")
    db.session.expire_all()
    erased = {name for name, c in people.items() if db.session.get(Candidate, c.id).erased_at is not None}
    assert erased == {"Old", "Expired", "Optedout", "Recent", "Almost"}


def test_retention_erases_in_short_units_and_goes_on_next_tick_past_its_pass_limit(app, monkeypatch):
    agent = make_agent()
    for i in range(30):
        _person(agent, f"P{i}", Stage.COMPLETED, 365)
    units = []
    real = retention.write_unit

    def counting(session):
        units.append(1)
        return real(session)

    monkeypatch.setattr(retention, "write_unit", counting)
    monkeypatch.setattr(retention, "ERASE_CHUNK", 4)
    monkeypatch.setattr(retention, "PASS_LIMIT", 20)
    assert jobs.daily(db.session, NOW, "test:1")
    assert len(units) == 5  # 20 candidates, 4 per unit
    assert db.session.query(Candidate).filter(Candidate.erased_at.isnot(None)).count() == 20
    # The pass stopped at its limit: the lease is free again, the next tick finishes the rest.
    assert jobs.daily(db.session, NOW + timedelta(seconds=30), "test:2")
    assert db.session.query(Candidate).filter(Candidate.erased_at.is_(None)).count() == 0


def test_the_candidate_page_says_when_their_data_will_be_erased(client, auth):
    agent = make_agent()
    from milo_portal.clock import now

    done = Candidate(agent_id=agent.id, name="Dana", email="dana@example.com", stage=Stage.COMPLETED, timezone="UTC")
    live = Candidate(agent_id=agent.id, name="Lee", email="lee@example.com", stage=Stage.STARTED, timezone="UTC")
    db.session.add_all([done, live])
    db.session.flush()
    ended = now() - timedelta(days=10)
    db.session.add(Event(candidate_id=done.id, agent_id=agent.id, type="completed", at=ended))
    db.session.commit()
    expected = (ended + timedelta(days=180)).strftime("%a %d %b %Y")
    page = client.get(f"/candidates/{done.id}").get_data(as_text=True)
    assert "will be erased on" in page and expected in page
    assert "will be erased on" not in client.get(f"/candidates/{live.id}").get_data(as_text=True)


@pytest.mark.parametrize("value,message", [("0", "between 1 and 3650"), ("", "Enter a number of days."),
                                           ("abc", "Not a valid integer"), ("99999", "between 1 and 3650")])
def test_a_bad_retention_is_a_message_next_to_the_field(client, auth, value, message):
    response = client.post("/settings/retention", {"r-retention_days": value, "r-audit_retention_days": "730"})
    assert response.status_code == 422
    body = response.get_data(as_text=True)
    assert 'id="r-retention_days-error"' in body and message in body


def test_retention_settings_are_saved_and_audited(client, auth):
    response = client.post("/settings/retention", {"r-retention_days": "90", "r-audit_retention_days": "365"})
    assert response.status_code == 302
    db.session.expire_all()
    row = db.session.get(OpsSettings, 1)
    assert (row.retention_days, row.audit_retention_days) == (90, 365)
    entry, = db.session.query(AuditEntry).filter_by(kind="settings_changed").all()
    assert "retention_days 180 → 90" in entry.detail
    assert client.get("/settings/retention").status_code == 405


def test_erasing_removes_what_other_ways_in_kept_of_the_person(app):
    """A resume from Indeed, the ATS's id, the upload row and the webhook body go with the rest."""
    from milo_portal.candidates.services import erase_candidate
    from milo_portal.models import (CandidateFile, ExternalRef, ImportBatch, ImportRow, Integration,
                                    IntegrationDelivery)

    c = _person(make_agent(), "Kept", Stage.COMPLETED, 200)
    batch = ImportBatch(agent_id=c.agent_id)
    integration = Integration(kind="generic", name="In-house", secret="s")
    db.session.add_all([batch, integration])
    db.session.flush()
    db.session.add_all([
        CandidateFile(candidate_id=c.id, filename="kept.pdf", content_type="application/pdf", size=3, data=b"pdf",
                      created_at=NOW),
        ExternalRef(scope="greenhouse", external_id="gh-1", candidate_id=c.id),
        ImportRow(batch_id=batch.id, filename="fair.csv", row_number=2, outcome="created", candidate_id=c.id,
                  name="Kept", email="kept@example.com", phone="+14155550100", external_id="x-1"),
        IntegrationDelivery(integration_id=integration.id, at=NOW, outcome="created", candidate_id=c.id,
                            body='{"email": "kept@example.com"}'),
    ])
    db.session.commit()
    erase_candidate(db.session, c, NOW, None)
    db.session.commit()
    assert db.session.query(CandidateFile).count() == 0
    assert db.session.query(ExternalRef).count() == 0
    row = db.session.query(ImportRow).one()
    assert (row.name, row.email, row.phone, row.external_id) == (None, None, None, None)
    assert db.session.query(IntegrationDelivery).one().body is None


def test_the_daily_job_purges_login_attempts_the_throttling_no_longer_reads_in_short_units(app, monkeypatch):
    """login_attempt rows were kept forever; the daily job now deletes those older than 30
    days (or the per-address window, if longer), a few per write unit."""
    from milo_portal.auth import services as auth_services
    from milo_portal.models import LoginAttempt

    for days in (400, 45, 30.5, 29, 1 / 24):
        db.session.add(LoginAttempt(at=NOW - timedelta(days=days), email="rita@example.com", address="192.0.2.7",
                                    success=days > 100))
    db.session.commit()
    deletes = []

    def on_execute(conn, cursor, statement, params, context, executemany):
        if statement.lstrip().upper().startswith("DELETE FROM LOGIN_ATTEMPT"):
            deletes.append(conn.in_transaction())

    monkeypatch.setattr(auth_services, "PURGE_CHUNK", 2)
    event.listen(db.engine, "before_cursor_execute", on_execute)
    try:
        assert jobs.daily(db.session, NOW, "test:1")
    finally:
        event.remove(db.engine, "before_cursor_execute", on_execute)
    db.session.expire_all()
    kept = sorted(NOW - a.at for a in db.session.query(LoginAttempt))
    assert kept == [timedelta(hours=1), timedelta(days=29)]
    assert len(deletes) == 2  # 3 old rows, 2 per unit: a full unit, then the last one
    db.session.commit()


def test_a_per_address_window_longer_than_a_month_keeps_the_attempts_it_counts(app):
    from milo_portal.models import LoginAttempt

    app.config["MILO_LOGIN_WINDOW_MINUTES"] = 60 * 24 * 60  # 60 days
    for days in (90, 59):
        db.session.add(LoginAttempt(at=NOW - timedelta(days=days), email="x@example.com", address="192.0.2.8",
                                    success=False))
    db.session.commit()
    assert jobs.daily(db.session, NOW, "test:1")
    db.session.expire_all()
    assert [NOW - a.at for a in db.session.query(LoginAttempt)] == [timedelta(days=59)]
    db.session.commit()


def test_the_metrics_page_counts_the_same_before_and_after_retention_erases(app):
    """Defect: the Metrics page left erased candidates out, so the daily erasure made last
    season's invites, clicks and completions vanish from it, although their anonymous facts
    are kept precisely so that it can count them."""
    from werkzeug.datastructures import MultiDict

    from milo_portal.metrics import definitions, services as metrics

    agent = make_agent()
    invited = NOW - timedelta(days=250)
    for i, stage in enumerate((Stage.COMPLETED, Stage.COMPLETED, Stage.EXPIRED, Stage.OPTED_OUT, Stage.STARTED)):
        c = Candidate(agent_id=agent.id, name=f"P{i}", email=f"p{i}@example.com", stage=stage, timezone="UTC",
                      created_at=invited, invited_at=invited, clicked_at=invited + timedelta(hours=1),
                      started_at=invited + timedelta(hours=2), last_activity_at=invited + timedelta(hours=3))
        if stage == Stage.COMPLETED:
            c.completed_at = invited + timedelta(hours=3)
        db.session.add(c)
        db.session.flush()
        ended = {Stage.COMPLETED: "completed", Stage.EXPIRED: "expired", Stage.OPTED_OUT: "opted_out"}.get(stage)
        if ended:
            db.session.add(Event(candidate_id=c.id, agent_id=agent.id, type=ended, at=invited + timedelta(hours=3)))
    db.session.commit()
    f, errors = definitions.parse(MultiDict({"period": "custom", "from": (invited - timedelta(days=1)).date().isoformat(),
                                             "to": (invited + timedelta(days=1)).date().isoformat()}), NOW, "UTC")
    assert not errors

    def figures():
        db.session.expire_all()
        found = metrics.funnel(db.session, metrics.defs_for(db.session), f)["counts"]
        return {who: found[who] for who in ("invited", "clicked", "started", "completed", "expired", "opted_out")}

    before = figures()
    assert before == {"invited": 5, "clicked": 5, "started": 5, "completed": 2, "expired": 1, "opted_out": 1}
    assert jobs.daily(db.session, NOW, "test:1") is True
    db.session.expire_all()
    assert db.session.query(Candidate).filter(Candidate.erased_at.is_not(None)).count() == 4  # all but the live one
    assert figures() == before
