"""The agents' funnels come from maintained counts (``agent_funnel_count``, written by triggers
on ``candidate``) and always equal a recount of the candidates with the Metrics page's
definitions, whatever path changed them."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import case, delete, distinct, func, insert, not_, select, update

from milo_portal.candidates import services, stages, tally
from milo_portal.clock import now
from milo_portal.extensions import db
from milo_portal.metrics import definitions as d
from milo_portal.metrics import services as metrics
from milo_portal.models import AgentFunnelCount, Candidate, CandidateCount, Event, Message, Stage
from tests.conftest import make_agent
from tests.test_candidate_list import fresh_database_url  # noqa: F401  (a fixture)

C = Candidate
WHOS = ("invited", "delivered", "link_only", "clicked", "started", "completed")


def _recounted(agent_ids: list[int]) -> dict[int, dict]:
    """Each agent's funnel counted from every candidate (erased too) and the failure events."""
    def total(cond):
        return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)

    rows = db.session.execute(
        select(C.agent_id, total(d.INVITED), total(d.LINK_ONLY), total(d.CLICKED), total(d.STARTED),
               total(d.COMPLETED)).where(C.agent_id.in_(agent_ids)).group_by(C.agent_id)).all()
    failed = dict(db.session.execute(
        select(C.agent_id, func.count(distinct(C.id))).select_from(Event)
        .join(Message, Message.id == Event.message_id).join(C, C.id == Event.candidate_id)
        .where(Event.type.in_(("failed", "bounced")), Message.kind == "invite", d.INVITED, not_(d.CLICKED))
        .group_by(C.agent_id)).all())
    found = {a: dict.fromkeys(WHOS, 0) for a in agent_ids}
    for agent_id, invited, link_only, clicked, started, completed in rows:
        found[agent_id] = {"invited": invited, "delivered": invited - failed.get(agent_id, 0), "link_only": link_only,
                           "clicked": clicked, "started": started, "completed": completed}
    return {a: d.funnel_figures(found[a]) for a in agent_ids}


def _agrees(*agents) -> dict:
    ids = [a if isinstance(a, int) else a.id for a in agents]
    maintained = metrics.agent_funnels(db.session, ids)
    assert maintained == _recounted(ids)
    return maintained


def test_funnel_counts_stay_exact_through_every_path_that_moves_a_candidate(app):
    one, two = make_agent("One"), make_agent("Two")
    moment = now()

    def add(agent, email, channel="email", **kw):
        contact = services.clean_contact(services.ContactData(name="P", email=email, channel=channel), "US", "UTC")
        return services.add_candidate(db.session, agent, contact, moment + timedelta(days=3), moment, **kw)[0]

    people = [add(one, f"a{i}@example.com") for i in range(8)] + [add(two, "b@example.com", source="api")]
    linked = add(one, "link@example.com", channel="link", invite_now=True)  # invited at once
    db.session.commit()
    # Added, not invited: in no funnel, so no row was appended for them.
    assert _agrees(one, two)[one.id]["invited"] == 1
    assert db.session.scalar(select(func.sum(AgentFunnelCount.n))) == 1

    # Invites go out; some click, start, complete (one skipping straight to completed).
    for person in people[:6] + people[8:]:
        stages.move(db.session, person, Stage.INVITED, moment)
    stages.move(db.session, people[0], Stage.CLICKED, moment)
    stages.move(db.session, people[0], Stage.STARTED, moment)
    stages.move(db.session, people[1], Stage.COMPLETED, moment)
    stages.move(db.session, people[2], Stage.CLICKED, moment)
    stages.move(db.session, people[6], Stage.STARTED, moment)  # came by a link: never invited
    stages.move(db.session, people[7], Stage.CLICKED, moment)
    db.session.commit()
    figures = _agrees(one, two)[one.id]
    assert {w: figures[w] for w in WHOS} == {"invited": 7, "delivered": 7, "link_only": 2, "clicked": 5,
                                             "started": 3, "completed": 1}

    # An invite fails (the one event fact the funnel needs): invited, not delivered.
    invite = Message(candidate_id=people[3].id, kind="invite", channel="email", scheduled_for=moment)
    db.session.add(invite)
    db.session.flush()
    stages.record(db.session, people[3], "failed", moment, message_id=invite.id)
    db.session.commit()
    assert _agrees(one, two)[one.id]["delivered"] == 6
    # The failure is counted from the event's own trigger, so no page reads the events again.
    assert db.session.get(Candidate, people[3].id).invite_failed_at is not None
    # Failed again, and bounced: still one candidate. A reminder's failure says nothing of the invite.
    stages.record(db.session, people[3], "bounced", moment, message_id=invite.id)
    reminder = Message(candidate_id=people[5].id, kind="reminder", channel="email", scheduled_for=moment)
    db.session.add(reminder)
    db.session.flush()
    stages.record(db.session, people[5], "failed", moment, message_id=reminder.id)
    db.session.commit()
    assert _agrees(one, two)[one.id]["delivered"] == 6
    assert db.session.get(Candidate, people[5].id).invite_failed_at is None
    # A bounce of an invite that someone clicked anyway: the click proves it arrived.
    clicked_invite = Message(candidate_id=people[2].id, kind="invite", channel="email", scheduled_for=moment)
    db.session.add(clicked_invite)
    db.session.flush()
    stages.record(db.session, people[2], "bounced", moment, message_id=clicked_invite.id)
    db.session.commit()
    assert _agrees(one, two)[one.id]["delivered"] == 6
    # The failed candidate clicks after all (the invite reached them by another way): delivered again.
    stages.move(db.session, people[3], Stage.CLICKED, moment)
    db.session.commit()
    assert _agrees(one, two)[one.id]["delivered"] == 7
    stages.move(db.session, people[4], Stage.INVITED, moment)
    failing = Message(candidate_id=people[4].id, kind="invite", channel="sms", scheduled_for=moment)
    db.session.add(failing)
    db.session.flush()
    stages.record(db.session, people[4], "failed", moment, message_id=failing.id)
    db.session.commit()
    assert _agrees(one, two)[one.id]["delivered"] == 6

    # Erasure keeps a candidate in the funnel; a delete (one, or many by one statement) takes it out.
    services.erase_candidate(db.session, people[0], moment, None)
    stages.move(db.session, people[1], Stage.COMPLETED, moment)  # refused: nothing changes
    db.session.delete(linked)
    db.session.commit()
    assert _agrees(one, two)[one.id]["invited"] == 6
    db.session.execute(delete(Candidate).where(Candidate.id.in_([people[4].id, people[7].id])))
    db.session.commit()
    _agrees(one, two)

    # Many rows in one statement (as an upload's chunks land), already far along, and a
    # candidate moved to another agent by a plain UPDATE.
    db.session.execute(insert(Candidate), [
        dict(agent_id=two.id, email=f"bulk{i}@example.com", stage=Stage.COMPLETED, source="bulk", token=f"t{i}",
             invited_at=moment if i % 2 else None, completed_at=moment if i % 3 else None,
             clicked_at=moment if i % 5 == 0 else None) for i in range(20)])
    db.session.execute(update(Candidate).where(Candidate.id == people[2].id).values(agent_id=two.id))
    db.session.commit()
    _agrees(one, two)

    # A rolled-back change takes its count with it.
    stages.move(db.session, people[5], Stage.COMPLETED, moment)
    db.session.execute(delete(Candidate).where(Candidate.agent_id == two.id, Candidate.source == "bulk"))
    db.session.rollback()
    before = _agrees(one, two)

    # A fold rewrites the rows, not the totals: one row per agent, invited and reached.
    assert tally.pending(db.session) > 0
    tally.fold(db.session)
    db.session.commit()
    assert tally.pending(db.session) == 0 and _agrees(one, two) == before
    keys = db.session.execute(select(AgentFunnelCount.agent_id, AgentFunnelCount.invited,
                                     AgentFunnelCount.reached, AgentFunnelCount.failed)).all()
    assert len(keys) == len(set(keys))
    # Never invited and never clicked: not in the funnel, so never a row.
    assert not any(not invited and reached == 0 for _a, invited, reached, _failed in keys)


def test_the_migration_counts_candidates_that_existed_before_it_and_can_be_undone(fresh_database_url):  # noqa: F811
    from flask_migrate import downgrade, upgrade

    from milo_portal import create_app
    from milo_portal.config import TestConfig
    from milo_portal.models import Agent

    app = create_app(TestConfig, database_url=fresh_database_url)
    with app.app_context():
        upgrade(revision="0015_bulk_jobs")
        db.session.add_all([Agent(id=1, title="Old", company="Acme"), Agent(id=2, title="Older", company="Acme")])
        moment = now()
        db.session.execute(insert(Candidate), [
            dict(agent_id=1 + i % 2, email=f"before{i}@example.com", stage=Stage.ADDED, source="bulk",
                 token=f"token-{i}", invited_at=moment if i % 3 else None, clicked_at=moment if i % 4 == 0 else None,
                 started_at=moment if i % 5 == 0 else None, completed_at=moment if i % 7 == 0 else None,
                 erased_at=moment if i == 9 else None)
            for i in range(60)])
        db.session.commit()
        upgrade()
        assert _agrees(1, 2)[1]["completed"] > 0
        stages.move(db.session, db.session.get(Candidate, 2), Stage.CLICKED, moment)
        db.session.commit()
        _agrees(1, 2)
        db.session.commit()  # (SQLite: end the read, which holds the write lock)
        # Undone (no table rebuilt: the list counts' triggers stay) and done again.
        downgrade(revision="0015_bulk_jobs")
        # (A Core insert names only the columns it sets: this schema predates later ones.)
        db.session.execute(insert(Candidate).values(agent_id=1, email="between@example.com", token="between",
                                                    invited_at=moment))
        db.session.commit()
        listed = db.session.scalar(select(func.sum(CandidateCount.n)).where(CandidateCount.agent_id == 1))
        assert listed == db.session.scalar(select(func.count()).select_from(Candidate).where(
            Candidate.agent_id == 1, Candidate.erased_at.is_(None)))
        db.session.commit()
        upgrade()
        assert _agrees(1, 2)[1]["invited"] == db.session.scalar(select(func.count()).select_from(Candidate).where(
            Candidate.agent_id == 1, Candidate.invited_at.is_not(None)))
        db.session.remove()
        db.engine.dispose()


def test_the_failed_invites_migration_finds_earlier_failures_and_can_be_undone(fresh_database_url):  # noqa: F811
    """0021: candidates whose invite failed before the revision are found from their events,
    the counts are rebuilt with the new key, and a downgrade and upgrade keep them exact."""
    from flask_migrate import downgrade, upgrade

    from milo_portal import create_app
    from milo_portal.config import TestConfig
    from milo_portal.models import Agent

    app = create_app(TestConfig, database_url=fresh_database_url)
    with app.app_context():
        upgrade(revision="0020_metrics_mix")
        db.session.add_all([Agent(id=1, title="Old", company="Acme"), Agent(id=2, title="Older", company="Acme")])
        moment = now()
        # (Core inserts name only the columns they set: this schema predates the new column.)
        db.session.execute(insert(Candidate), [
            dict(id=100 + i, agent_id=1 + i % 2, email=f"before{i}@example.com", stage=Stage.INVITED, source="bulk",
                 token=f"token-{i}", invited_at=moment, clicked_at=moment if i % 4 == 0 else None)
            for i in range(24)])
        db.session.execute(insert(Message), [
            dict(id=500 + i, candidate_id=100 + i, kind="invite" if i % 3 else "reminder", channel="email",
                 scheduled_for=moment) for i in range(24)])
        # Failures: twice for some, a bounce for others; reminders' failures (i % 3 == 0) count for nothing.
        db.session.execute(insert(Event), [
            dict(candidate_id=100 + i, agent_id=1 + i % 2, type=kind, at=moment, message_id=500 + i)
            for i in range(24) for kind in (("failed", "failed") if i % 2 else ("bounced",)) if i % 5])
        db.session.commit()
        upgrade()
        before = _agrees(1, 2)
        assert before[1]["invited"] == 12 and before[1]["delivered"] < 12
        failed = set(db.session.scalars(select(Candidate.id).where(Candidate.invite_failed_at.is_not(None))))
        assert failed == {100 + i for i in range(24) if i % 5 and i % 3}
        db.session.commit()
        downgrade(revision="0020_metrics_mix")
        db.session.execute(insert(Candidate).values(id=200, agent_id=1, email="between@example.com", token="between",
                                                    invited_at=moment))
        db.session.commit()
        upgrade()
        after = _agrees(1, 2)
        assert after[1]["invited"] == 13 and after[1]["delivered"] == before[1]["delivered"] + 1
        db.session.remove()
        db.engine.dispose()
