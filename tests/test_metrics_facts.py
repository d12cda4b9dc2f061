"""The Metrics page reads each candidate's facts from ``metrics_fact`` and ``metrics_answer``:
triggers mark a candidate stale whatever path changed what a fact depends on, and a refresh
recomputes exactly the stale ones, so the stored facts always equal a recomputation of all."""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.orm import Session
from werkzeug.datastructures import MultiDict

from milo_portal.candidates import services, stages
from milo_portal.clock import now
from milo_portal.extensions import db
from milo_portal.metrics import definitions, facts
from milo_portal.metrics import services as metrics
from milo_portal.models import (Answer, Candidate, Event, Message, MetricsAnswer, MetricsFact, MetricsStale, Question,
                                Stage)
from milo_portal.ops import jobs
from milo_portal.public import services as public
from tests.conftest import make_agent
from tests.test_candidate_list import fresh_database_url  # noqa: F401  (a fixture)

F = MetricsFact


def _rows() -> list[tuple]:
    facts_ = db.session.execute(select(F).order_by(F.candidate_id)).scalars().all()
    answers = db.session.execute(select(MetricsAnswer).order_by(MetricsAnswer.answer_id)).scalars().all()
    shown = [tuple(getattr(r, c.key) for c in F.__table__.columns) for r in facts_]
    shown += [tuple(getattr(r, c.key) for c in MetricsAnswer.__table__.columns) for r in answers]
    db.session.rollback()
    return shown


def _stale() -> set[int]:
    """The candidates marked stale (on SQLite, new events and messages are marks once absorbed)."""
    facts.absorb(db.session)
    found = set(db.session.scalars(select(MetricsStale.candidate_id)))
    db.session.rollback()
    return found


def _fresh_equals_recomputed() -> list[tuple]:
    """Refresh, then recompute every candidate: a change no trigger caught would differ."""
    assert facts.refresh(db.session)
    stored = _rows()
    db.session.execute(insert(MetricsStale).from_select(["candidate_id"], select(Candidate.id)))
    db.session.commit()
    assert facts.refresh(db.session)
    assert _rows() == stored
    return stored


def _question(agent, position: int) -> Question:
    q = Question(agent_id=agent.id, position=position, text=f"Question {position}?")
    db.session.add(q)
    return q


def test_every_path_that_changes_a_fact_marks_the_candidate_stale(app):
    agent = make_agent("Facts")
    _question(agent, 1), _question(agent, 2)
    moment = now().replace(microsecond=0)

    def add(email, channel="email", **kw):
        contact = services.clean_contact(services.ContactData(name="P", email=email, channel=channel), "US",
                                         "Asia/Tokyo")
        return services.add_candidate(db.session, agent, contact, moment + timedelta(days=3), moment, **kw)[0]

    people = [add(f"p{i}@Example.com") for i in range(6)]
    db.session.commit()
    # A new candidate gets a stale row in the same transaction as its insert.
    assert _stale() == {p.id for p in people}
    _fresh_equals_recomputed()
    assert _stale() == set()

    # Stage moves (candidate columns), an invite message and its delivery, event facts.
    invite = Message(candidate_id=people[0].id, kind="invite", channel="email", variant="B", scheduled_for=moment)
    db.session.add(invite)
    db.session.commit()
    assert _stale() == {people[0].id}
    stages.move(db.session, people[0], Stage.INVITED, moment)
    stages.move(db.session, people[1], Stage.INVITED, moment + timedelta(days=2))  # a day late
    db.session.commit()
    assert _stale() == {people[0].id, people[1].id}
    _fresh_equals_recomputed()
    db.session.execute(update(Message).where(Message.id == invite.id).values(sent_at=moment, status="sent"))
    db.session.commit()
    assert _stale() == {people[0].id}
    for kind, who in (("opened", people[0]), ("machine_opened", people[1]), ("reminded", people[1]),
                      ("failed", people[2])):
        stages.record(db.session, who, kind, moment, message_id=invite.id if kind == "failed" else None)
    db.session.commit()
    assert _stale() == {people[0].id, people[1].id, people[2].id}
    _fresh_equals_recomputed()

    # An event no fact reads leaves the row fresh (no refresh work for nothing).
    db.session.execute(insert(Event), [dict(candidate_id=people[3].id, agent_id=agent.id, type="visited", at=moment)])
    db.session.commit()
    assert _stale() == set()

    # Answers saved, changed and removed; the interview completed.
    stages.move(db.session, people[0], Stage.CLICKED, moment + timedelta(hours=1))
    stages.move(db.session, people[0], Stage.STARTED, moment + timedelta(hours=2))
    db.session.commit()
    public.answer(db.session, people[0], 1, "First", moment + timedelta(hours=2, minutes=5))
    db.session.commit()
    assert _stale() == {people[0].id}
    public.answer(db.session, people[0], 2, "Second", moment + timedelta(hours=2, minutes=12))
    db.session.commit()
    stored = _fresh_equals_recomputed()
    spent = sorted(r for r in stored if len(r) == len(MetricsAnswer.__table__.columns))
    assert [(r[3], r[4]) for r in spent] == [(1, 300.0), (2, 420.0)]  # (position, seconds)
    db.session.execute(update(Answer).where(Answer.candidate_id == people[0].id, Answer.position == 2)
                       .values(answered_at=moment + timedelta(hours=2, minutes=20)))
    db.session.commit()
    assert _stale() == {people[0].id}
    stages.move(db.session, people[0], Stage.COMPLETED, moment + timedelta(hours=3))
    db.session.commit()
    _fresh_equals_recomputed()
    row = db.session.get(F, people[0].id)
    assert (row.answers, row.invite_complete, row.bucket, row.variant, row.email_domain) == (
        2, 3 * 3600.0, 1, "email/B", "example.com")
    assert row.email_messages == 1 and row.email_sent == 1
    db.session.rollback()

    # A plain UPDATE of a watched column (another agent's source tag, the channel), an
    # erasure, a delete (the rows go with the candidate) and many rows in one statement.
    db.session.execute(update(Candidate).where(Candidate.id == people[4].id).values(channel="sms"))
    services.erase_candidate(db.session, people[1], moment, None)
    db.session.execute(delete(Candidate).where(Candidate.id == people[5].id))
    db.session.execute(insert(Candidate), [dict(agent_id=agent.id, email=f"bulk{i}@example.com", stage=Stage.COMPLETED,
                                                source="bulk", token=f"facts-bulk-{i}", invited_at=moment,
                                                completed_at=moment + timedelta(days=i)) for i in range(3)])
    db.session.commit()
    assert len(_stale()) == 5
    _fresh_equals_recomputed()
    assert db.session.scalar(select(func.count()).select_from(F)) == db.session.scalar(
        select(func.count()).select_from(Candidate))


def test_a_candidates_invite_hour_and_friday_are_their_own_local_time(app):
    """Friday 23:30 UTC is Saturday morning in Tokyo: not a Friday invite, hour 8 Saturday."""
    agent = make_agent("Zones")
    friday_night = datetime(2026, 11, 20, 23, 30, tzinfo=timezone.utc)
    for zone, email in (("Asia/Tokyo", "tokyo@example.com"), ("America/Los_Angeles", "la@example.com")):
        contact = services.clean_contact(services.ContactData(name="Z", email=email, channel="email"), "US", zone)
        person = services.add_candidate(db.session, agent, contact, friday_night + timedelta(days=5),
                                        friday_night - timedelta(hours=1))[0]
        stages.move(db.session, person, Stage.INVITED, friday_night)
    db.session.commit()
    facts.refresh(db.session)
    heat = dict(db.session.execute(select(Candidate.email, F.heat).join(F, F.candidate_id == Candidate.id)).all())
    friday = definitions.FACT_BITS.index("friday")
    flags = dict(db.session.execute(select(Candidate.email, F.flags).join(F, F.candidate_id == Candidate.id)).all())
    assert heat == {"tokyo@example.com": 5 * 24 + 8, "la@example.com": 4 * 24 + 15}
    assert [bool(flags[e] >> friday & 1) for e in ("tokyo@example.com", "la@example.com")] == [False, True]


def test_the_page_refreshes_for_a_few_seconds_then_says_how_many_are_not_counted_yet(app, auth, client, monkeypatch):
    agent = make_agent("Large")
    moment = now()
    db.session.execute(insert(Candidate), [dict(agent_id=agent.id, email=f"c{i}@example.com", stage=Stage.INVITED,
                                                source="bulk", token=f"facts-wait-{i}", invited_at=moment)
                                           for i in range(3 * facts.CHUNK)])
    db.session.commit()
    monkeypatch.setattr(metrics, "REFRESH_SECONDS", 0.0)  # one unit, then the page shows what is there
    page = client.get("/metrics").get_data(as_text=True)
    assert f"{2 * facts.CHUNK:,}" in page and "not counted in them yet" in page
    monkeypatch.setattr(metrics, "REFRESH_SECONDS", 5.0)
    page = client.get("/metrics").get_data(as_text=True)
    assert "not counted in them yet" not in page
    f, _ = definitions.parse(MultiDict(), now(), "UTC")
    assert metrics.page(db.session, f)["funnel"]["counts"]["invited"] == 3 * facts.CHUNK


def test_the_schedulers_tick_recomputes_stale_facts_in_the_background(app):
    agent = make_agent("Tick")
    db.session.execute(insert(Candidate), [dict(agent_id=agent.id, email=f"t{i}@example.com", stage=Stage.ADDED,
                                                source="bulk", token=f"facts-tick-{i}") for i in range(5)])
    db.session.commit()
    assert len(_stale()) == 5
    assert jobs.metrics_facts(db.session, now(), "test") is True
    assert _stale() == set()


def test_a_metrics_page_with_nothing_stale_writes_nothing(app, auth, client):
    make_agent("Quiet")
    client.get("/metrics")
    writes = []

    from sqlalchemy import event

    def seen(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith(("UPDATE", "INSERT", "DELETE", "BEGIN IMMEDIATE")):
            writes.append(statement)

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        assert client.get("/metrics").status_code == 200
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    assert [w for w in writes if "metrics_fact" in w or "IMMEDIATE" in w] == []


def test_the_migration_makes_stale_rows_for_candidates_already_there_and_can_be_undone(fresh_database_url):  # noqa: F811
    from flask_migrate import downgrade, upgrade

    from milo_portal import create_app
    from milo_portal.config import TestConfig
    from milo_portal.models import Agent

    app = create_app(TestConfig, database_url=fresh_database_url)
    with app.app_context():
        upgrade(revision="0016_agent_tally")
        db.session.add(Agent(id=1, title="Old", company="Acme"))
        db.session.flush()
        moment = now()
        db.session.execute(insert(Candidate.__table__), [
            dict(agent_id=1, email=f"before{i}@example.com", stage=Stage.INVITED, source="bulk", token=f"old-{i}",
                 channel="email", timezone="UTC", invited_at=moment, created_at=moment, updated_at=moment)
            for i in range(4)])
        db.session.commit()
        upgrade()
        assert db.session.scalar(select(func.count()).select_from(MetricsStale)) == 4
        db.session.rollback()
        f, _ = definitions.parse(MultiDict(), now(), "UTC")
        assert metrics.page(db.session, f)["funnel"]["counts"]["invited"] == 4
        db.session.rollback()
        downgrade(revision="0016_agent_tally")
        names = db.session.execute(select(func.count()).select_from(Agent)).scalar()
        assert names == 1
        db.session.rollback()
        upgrade()
        assert db.session.scalar(select(func.count()).select_from(MetricsStale)) == 4
        db.session.remove()
        db.engine.dispose()


def test_an_event_added_after_the_newest_ones_were_deleted_still_marks_its_candidate(app):
    """Deleting a candidate deletes their events and messages; SQLite then hands the newest
    ids out again, and the event or message that gets one must still mark its candidate."""
    agent = make_agent("Reused ids")
    moment = now().replace(microsecond=0)
    kept, gone = (services.add_candidate(
        db.session, agent, services.clean_contact(services.ContactData(name="P", email=f"r{i}@example.com"), "US",
                                                  "Europe/Berlin"), moment + timedelta(days=3), moment)[0]
        for i in range(2))
    db.session.commit()
    stages.record(db.session, gone, "opened", moment)
    db.session.add(Message(candidate_id=gone.id, kind="invite", channel="email", variant="A", scheduled_for=moment))
    db.session.commit()
    _fresh_equals_recomputed()
    newest = (db.session.scalar(select(func.max(Event.id))), db.session.scalar(select(func.max(Message.id))))
    db.session.execute(delete(Candidate).where(Candidate.id == gone.id))
    db.session.commit()
    _fresh_equals_recomputed()
    stages.record(db.session, kept, "opened", moment + timedelta(minutes=1))
    db.session.add(Message(candidate_id=kept.id, kind="invite", channel="email", variant="B", scheduled_for=moment))
    db.session.commit()
    if db.session.get_bind().dialect.name == "sqlite":  # the case this test is about
        reused = (db.session.scalar(select(func.max(Event.id))), db.session.scalar(select(func.max(Message.id))))
        assert reused[0] <= newest[0] and reused[1] <= newest[1]  # ids the refresh had read before
    assert _stale() == {kept.id}
    _fresh_equals_recomputed()
    row = db.session.get(F, kept.id)
    assert (row.flags >> definitions.FACT_BITS.index("opened_event") & 1, row.email_messages, row.variant) == (
        1, 1, "email/B")


def test_a_refresh_never_deadlocks_with_a_writer_that_marks_candidates_it_is_claiming(app):
    """Defect (PostgreSQL): the refresh claimed its chunk by deleting the stale rows in key
    order, waiting for any row another transaction held. A writer that had marked a later
    candidate and then marked an earlier one, already claimed (the dispatcher's batch, a bulk
    confirm), closed the circle: PostgreSQL aborted one of the two with "deadlock detected"
    (seen in the workers' log under load: the background refresh's traceback; it could as
    well have been the writer's request). The claim now skips rows another transaction
    holds: a later refresh takes them once that writer has committed."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: a refresh never holds a row a writer waits for")
    agent = make_agent("Locks")
    earlier, later = (Candidate(agent_id=agent.id, email=f"lock{i}@example.com", stage=Stage.ADDED, source="bulk",
                                token=f"facts-lock-{i}") for i in range(2))
    db.session.add_all([earlier, later])
    db.session.commit()
    earlier_id, later_id = sorted((earlier.id, later.id))
    db.session.remove()
    failures: list[BaseException] = []
    engine = db.engine
    writer = Session(engine)
    # The writer marks the later candidate (its trigger's upsert takes that stale row's lock).
    writer.execute(update(Candidate).where(Candidate.id == later_id).values(source="api"))

    def refresh() -> None:
        try:
            with app.app_context(), Session(engine) as session:
                facts.refresh(session)
        except BaseException as err:  # reported below
            failures.append(err)

    refreshing = threading.Thread(target=refresh)
    refreshing.start()
    with db.engine.connect() as watcher:  # until the refresh has finished or waits for a lock
        for _ in range(100):
            waiting = watcher.scalar(text("SELECT count(*) FROM pg_stat_activity "
                                          "WHERE wait_event_type = 'Lock' AND datname = current_database()"))
            if waiting or not refreshing.is_alive():
                break
            time.sleep(0.05)
    try:
        # Then it marks the earlier one: before the fix, the refresh held that row and waited for the later one.
        writer.execute(update(Candidate).where(Candidate.id == earlier_id).values(source="api"))
        writer.commit()
    except BaseException as err:  # reported below
        failures.append(err)
        writer.rollback()
    finally:
        writer.close()
    refreshing.join(timeout=30)
    assert not failures, failures
    # Both changes reach the facts: the skipped candidate, and the one marked again after its claim.
    assert facts.refresh(db.session)
    assert dict(db.session.execute(select(F.candidate_id, F.source).where(
        F.candidate_id.in_((earlier_id, later_id)))).all()) == {earlier_id: "api", later_id: "api"}
    db.session.rollback()
