"""The planner and the dispatcher at chosen instants: invite → reminders → nudge → expiry."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from milo_portal.candidates import services as cs
from milo_portal.extensions import db
from milo_portal.followups.services import dispatch, plan, upcoming
from milo_portal.models import Event, Message, MessageStatus, Stage
from tests.conftest import at, make_agent, make_user

# Monday 30 November 2026, 10:00 in New York.
MON_10 = at("2026-11-30T10:00:00-05:00")
NY = "America/New_York"


@pytest.fixture()
def world(app, smtp, team_settings):
    owner = make_user("owner@acme.example", "Rita Recruiter")
    agent = make_agent("Analyst", owner_id=owner.id, deadline_days=7)
    return agent


def add(agent, now, invite=True, **fields):
    contact = cs.CleanContact(name=fields.pop("name", "Ada Lovelace"), email=fields.pop("email", "ada@example.com"),
                              phone=fields.pop("phone", None), timezone=fields.pop("tz", NY),
                              channel=fields.pop("channel", "email"))
    deadline = fields.pop("deadline", now + timedelta(days=7))
    c, _ = cs.add_candidate(db.session, agent, contact, deadline, now, invite_now=invite)
    db.session.commit()
    return c


def kinds(c, status=None):
    q = db.session.query(Message).filter_by(candidate_id=c.id)
    if status:
        q = q.filter_by(status=status)
    return sorted((m.kind, m.step) for m in q)


def tick(now):
    plan(db.session, now)
    return dispatch(db.session, now)


def test_invite_then_reminder_1_and_2_then_nothing(world, smtp):
    c = add(world, MON_10)
    assert tick(MON_10).sent and smtp.wait_for(1)
    db.session.refresh(c)
    assert c.stage == Stage.INVITED and c.invited_at == MON_10
    # 23 h later nothing; 24 h later (Tuesday 10:00) reminder 1.
    assert not tick(MON_10 + timedelta(hours=23)).sent
    assert len(tick(MON_10 + timedelta(hours=24)).sent) == 1
    assert len(tick(MON_10 + timedelta(hours=48)).sent) == 1
    for hours in (49, 72, 96, 120):
        assert not tick(MON_10 + timedelta(hours=hours)).sent
    assert kinds(c, MessageStatus.SENT) == [("invite", 1), ("reminder", 1), ("reminder", 2)]
    assert [m.message["Subject"] for m in smtp.wait_for(3)][1].startswith("Reminder:")
    assert db.session.query(Event).filter_by(candidate_id=c.id, type="reminded").count() == 2


def test_a_click_between_reminders_stops_reminder_2(world):
    c = add(world, MON_10)
    tick(MON_10)
    tick(MON_10 + timedelta(hours=24))
    from milo_portal.candidates import stages

    stages.move(db.session, c, Stage.CLICKED, MON_10 + timedelta(hours=30))
    db.session.commit()
    tick(MON_10 + timedelta(hours=48))
    tick(MON_10 + timedelta(hours=72))
    assert kinds(c, MessageStatus.SENT) == [("invite", 1), ("reminder", 1)]


def test_a_reminder_queued_before_the_click_is_cancelled_at_claim_time(world):
    c = add(world, MON_10)
    tick(MON_10)
    # Planned at 24 h, but due in the window; the candidate clicks before it goes.
    plan(db.session, MON_10 + timedelta(hours=24))
    from milo_portal.candidates import stages

    stages.move(db.session, c, Stage.CLICKED, MON_10 + timedelta(hours=24, minutes=1))
    db.session.commit()
    result = dispatch(db.session, MON_10 + timedelta(hours=24, minutes=2))
    assert not result.sent and "Clicked their link" in result.cancelled[0]


def test_invite_outside_the_window_waits_for_the_window(world, smtp):
    thursday_1801 = at("2026-12-03T18:01:00-05:00")
    c = add(world, thursday_1801)
    message = db.session.query(Message).filter_by(candidate_id=c.id).one()
    assert message.scheduled_for == at("2026-12-07T09:00:00-05:00")  # not Friday: Monday 09:00
    assert not tick(at("2026-12-04T10:00:00-05:00")).sent
    assert len(tick(at("2026-12-07T09:00:00-05:00")).sent) == 1


def test_send_now_ignores_the_friday_rule_but_not_opt_out(world, smtp):
    friday = at("2026-12-04T10:00:00-05:00")
    c = add(world, friday, invite=False)
    cs.send_invite(db.session, c, friday, actor_id=None, immediate=True)
    db.session.commit()
    assert len(tick(friday).sent) == 1
    other = add(world, friday, invite=False, email="bea@example.com", name="Bea")
    other.opted_out_email = True
    db.session.commit()
    with pytest.raises(Exception, match="opted out"):
        cs.send_invite(db.session, other, friday, actor_id=None, immediate=True)


def test_nudge_only_for_started_and_final_nudge_before_the_deadline(world):
    deadline = at("2026-12-04T17:00:00-05:00")  # Friday 17:00
    started = add(world, MON_10, deadline=deadline)
    clicked = add(world, MON_10, deadline=deadline, email="c@example.com", name="Clicked Only")
    tick(MON_10)
    from milo_portal.candidates import stages

    stages.move(db.session, started, Stage.STARTED, MON_10 + timedelta(hours=1))
    stages.move(db.session, clicked, Stage.CLICKED, MON_10 + timedelta(hours=1))
    db.session.commit()
    # Thursday 17:00 is 24 h before: the nudge goes.
    tick(at("2026-12-03T17:00:00-05:00"))
    # Friday 15:00 is 2 h before: the final nudge — but 22 h after the nudge: spacing 20 h allows it.
    tick(at("2026-12-04T15:00:00-05:00"))
    assert kinds(started, MessageStatus.SENT) == [("final_nudge", 1), ("invite", 1), ("nudge", 1)]
    assert kinds(clicked, MessageStatus.SENT) == [("invite", 1)]


def test_nothing_after_completion_opt_out_or_the_deadline(world):
    done = add(world, MON_10)
    out = add(world, MON_10, email="o@example.com", name="Opted")
    late = add(world, MON_10, email="l@example.com", name="Late", deadline=MON_10 + timedelta(hours=30))
    tick(MON_10)
    from milo_portal.candidates import stages

    stages.move(db.session, done, Stage.COMPLETED, MON_10 + timedelta(hours=2))
    cs.set_opt_out(db.session, out, "email", True, MON_10 + timedelta(hours=2), None)
    db.session.commit()
    for hours in (24, 48, 72, 96):
        tick(MON_10 + timedelta(hours=hours))
    assert kinds(done, MessageStatus.SENT) == [("invite", 1)]
    assert kinds(out, MessageStatus.SENT) == [("invite", 1)]
    assert kinds(late, MessageStatus.SENT) == [("invite", 1), ("reminder", 1)]
    db.session.refresh(late)
    assert late.stage == Stage.EXPIRED
    assert db.session.query(Event).filter_by(candidate_id=late.id, type="expired").count() == 1


def test_the_cap_and_the_spacing_are_respected(world, team_settings):
    team_settings.followup_cap = 1
    team_settings.reminder_offsets_hours = "24,30"
    db.session.commit()
    c = add(world, MON_10)
    tick(MON_10)
    tick(MON_10 + timedelta(hours=24))
    # Reminder 2 is due at 30 h, but 20 h spacing after reminder 1 and the cap of 1 both stop it.
    result = tick(MON_10 + timedelta(hours=30))
    assert kinds(c, MessageStatus.SENT) == [("invite", 1), ("reminder", 1)]
    assert not result.sent


def test_spacing_moves_a_message_to_the_next_allowed_moment(world, team_settings):
    team_settings.reminder_offsets_hours = "24,30"
    db.session.commit()
    c = add(world, MON_10)
    tick(MON_10)
    tick(MON_10 + timedelta(hours=24))
    result = tick(MON_10 + timedelta(hours=30))
    assert result.moved
    reminder2 = db.session.query(Message).filter_by(candidate_id=c.id, kind="reminder", step=2).one()
    # Reminder 1 went Tuesday 10:00; 20 h later is Wednesday 06:00, so Wednesday 09:00 local.
    assert reminder2.scheduled_for == at("2026-12-02T09:00:00-05:00")
    assert "spacing" in reminder2.rule


def test_manual_nudge_now_respects_opt_out_and_uses_manual_spacing(world):
    c = add(world, MON_10)
    tick(MON_10)
    from milo_portal.candidates import stages

    stages.move(db.session, c, Stage.STARTED, MON_10 + timedelta(minutes=5))
    db.session.commit()
    cs.nudge_now(db.session, c, MON_10 + timedelta(minutes=10), actor_id=None)
    db.session.commit()
    result = tick(MON_10 + timedelta(minutes=10))
    assert result.moved  # one hour after the invite at the earliest
    assert len(tick(MON_10 + timedelta(hours=1)).sent) == 1
    cs.set_opt_out(db.session, c, "email", True, MON_10 + timedelta(hours=2), None)
    db.session.commit()
    with pytest.raises(Exception, match="opted out"):
        cs.nudge_now(db.session, c, MON_10 + timedelta(hours=3), actor_id=None)


def test_opted_out_after_queueing_is_cancelled_at_claim_time(world):
    c = add(world, MON_10)
    c.opted_out_email = True  # changed behind the queue's back
    db.session.commit()
    result = tick(MON_10)
    assert not result.sent and "Opted out" in result.cancelled[0]


def test_two_planners_insert_each_follow_up_once(world, app, database_url):
    from milo_portal import create_app
    from milo_portal.config import TestConfig

    c = add(world, MON_10)
    tick(MON_10)
    other = create_app(TestConfig, database_url=database_url)
    with other.app_context():
        plan(db.session, MON_10 + timedelta(hours=24))
        db.session.remove()
        db.engine.dispose()
    plan(db.session, MON_10 + timedelta(hours=24))
    assert kinds(c) == [("invite", 1), ("reminder", 1)]


def test_schedule_shows_queued_and_planned_follow_ups(world, runner):
    c = add(world, MON_10)
    tick(MON_10)
    schedule = upcoming(db.session, c, MON_10 + timedelta(hours=1))
    assert [(i.kind, i.status) for i in schedule.items] == [("reminder", "planned"), ("reminder", "planned")]
    assert "Nudges follow only if they start" in schedule.note
    result = runner.invoke(args=["milo", "schedule", str(c.id), "--at", "2026-11-30T16:00:00Z"])
    assert result.exit_code == 0, result.output
    assert "reminder by email [planned]" in result.output and "EST theirs" in result.output


def test_settings_page_saves_the_follow_up_rules(app, auth, client):
    from milo_portal.settings.services import get_settings

    body = client.get("/settings").get_data(as_text=True)
    assert 'value="09:00"' in body and "Follow-up rules" in body
    r = client.post("/settings/rules", {"t-window_start": "08:30", "t-window_end": "20:00", "t-send_days": ["1", "2", "3", "4", "5", "6"],
                                  "t-initial_send_days": ["1", "2", "3"], "t-reminder_offsets_hours": "48, 24, 72",
                                  "t-nudge_lead_hours": "12", "t-final_nudge_lead_hours": "0", "t-followup_cap": "2",
                                  "t-min_spacing_auto_hours": "18", "t-min_spacing_manual_hours": "2"})
    assert r.status_code == 302
    s = get_settings(db.session)
    assert (s.window_start_minute, s.window_end_minute, s.send_days, s.initial_send_days) == (510, 1200, "1,2,3,4,5,6", "1,2,3")
    assert (s.reminder_offsets_hours, s.nudge_lead_hours, s.final_nudge_lead_hours, s.followup_cap) == ("24,48,72", 12, 0, 2)


def test_settings_refuses_a_window_that_ends_before_it_starts_and_no_days(app, auth, client):
    r = client.post("/settings/rules", {"t-window_start": "18:00", "t-window_end": "09:00", "t-reminder_offsets_hours": "soon",
                                  "t-nudge_lead_hours": "24", "t-final_nudge_lead_hours": "2", "t-followup_cap": "3",
                                  "t-min_spacing_auto_hours": "20", "t-min_spacing_manual_hours": "1"})
    body = r.get_data(as_text=True)
    assert r.status_code == 422
    assert "must end after it starts" in body and "Choose at least one day." in body and "Whole hours" in body


def test_agent_overrides_win_over_the_team_rules(world, team_settings):
    from milo_portal.followups.rules import rules_for

    world.reminder_offsets_hours = "6"
    world.final_nudge_lead_hours = 0
    world.window_start_minute = 7 * 60
    db.session.commit()
    rules = rules_for(team_settings, world)
    assert (rules.reminder_offsets, rules.final_nudge_lead, rules.window_start, rules.window_end) == ((6,), None, 420, 1080)


def test_outbox_lists_by_status_and_its_actions_follow_the_state_machine(world, auth, client):
    c = add(world, MON_10)
    failed = db.session.query(Message).filter_by(candidate_id=c.id).one()
    failed.status, failed.last_error = MessageStatus.FAILED, "SMTP 550: no such user"
    doubt = Message(candidate_id=c.id, kind="reminder", step=1, channel="email", status=MessageStatus.IN_DOUBT,
                    scheduled_for=MON_10)
    db.session.add(doubt)
    db.session.commit()
    body = client.get("/outbox?status=failed").get_data(as_text=True)
    assert "SMTP 550: no such user" in body and "Retry" in body and "Failed (1)" in body and "In doubt (1)" in body
    client.post(f"/outbox/{failed.id}/retry")
    db.session.refresh(failed)
    assert failed.status == MessageStatus.SCHEDULED and failed.attempts == 0
    client.post(f"/outbox/{failed.id}/mark_sent")  # not allowed from scheduled
    db.session.refresh(failed)
    assert failed.status == MessageStatus.SCHEDULED
    client.post(f"/outbox/{doubt.id}/mark_sent")
    db.session.refresh(doubt)
    assert doubt.status == MessageStatus.SENT and doubt.sent_at is not None
    client.post(f"/outbox/{failed.id}/cancel")
    db.session.refresh(failed)
    assert failed.status == MessageStatus.CANCELLED
    assert client.post("/outbox/999/cancel").status_code == 404


def test_in_doubt_can_be_sent_again(world, auth, client):
    c = add(world, MON_10)
    m = db.session.query(Message).filter_by(candidate_id=c.id).one()
    m.status = MessageStatus.IN_DOUBT
    db.session.commit()
    client.post(f"/outbox/{m.id}/send_again")
    db.session.refresh(m)
    assert m.status == MessageStatus.SCHEDULED


def test_nudge_all_shows_how_many_then_nudges(world, auth, client):
    from milo_portal.candidates import stages
    from milo_portal.clock import now

    people = [add(world, now() - timedelta(hours=1), email=f"n{i}@example.com", name=f"N{i}",
                  deadline=now() + timedelta(days=3)) for i in range(3)]
    for c in people[:2]:
        stages.move(db.session, c, Stage.STARTED, now())
    people[1].opted_out_email = True
    db.session.commit()
    page = client.get(f"/agents/{world.id}/nudge-all").get_data(as_text=True)
    assert "<strong>2</strong> candidates will be nudged" in page
    assert "Nudge all who started but didn't finish (2)" in client.get(f"/agents/{world.id}").get_data(as_text=True)
    client.post(f"/agents/{world.id}/nudge-all")
    assert db.session.query(Message).filter_by(kind="manual_nudge").count() == 1  # the opted-out one is skipped


def test_send_now_button_queues_an_immediate_invite(world, auth, client):
    from milo_portal.clock import now

    c = add(world, now(), invite=False)
    client.post(f"/candidates/{c.id}/send-now")
    m = db.session.query(Message).filter_by(candidate_id=c.id).one()
    assert m.immediate is True and m.kind == "invite"


def test_dispatch_command_walks_a_candidate_through_the_rules(world, runner):
    c = add(world, MON_10, deadline=at("2026-12-04T17:00:00-05:00"))
    out = runner.invoke(args=["milo", "dispatch", "--at", "2026-11-30T10:00:00-05:00", "--dry-run"]).output
    assert "would send: #" in out and "invite 1 by email to Ada Lovelace <ada@example.com>" in out
    assert db.session.query(Message).one().status == MessageStatus.SCHEDULED  # the dry run changed nothing
    out = runner.invoke(args=["milo", "dispatch", "--at", "2026-11-30T10:00:00-05:00"]).output
    assert "sent: #" in out and "sent 1," in out
    out = runner.invoke(args=["milo", "dispatch", "--at", "2026-12-01T10:00:00-05:00"]).output
    assert "planned: 1 reminder" in out and "sent 1," in out
    from milo_portal.candidates import stages

    stages.move(db.session, c, Stage.STARTED, at("2026-12-01T12:00:00-05:00"))
    db.session.commit()
    out = runner.invoke(args=["milo", "dispatch", "--at", "2026-12-03T17:00:00-05:00"]).output
    assert "1 nudge" in out and "sent 1," in out
    out = runner.invoke(args=["milo", "dispatch", "--at", "2026-12-04T17:00:01-05:00"]).output
    assert "expired: 1" in out
    db.session.refresh(c)
    assert c.stage == Stage.EXPIRED


def test_dispatch_command_refuses_a_time_without_offset(runner, app):
    result = runner.invoke(args=["milo", "dispatch", "--at", "2026-12-04T09:30:00"])
    assert result.exit_code != 0 and "offset" in result.output


def test_a_nudge_with_no_moment_left_before_the_deadline_is_recorded_as_cancelled(world, team_settings):
    from milo_portal.candidates import stages

    team_settings.nudge_lead_hours = 60
    team_settings.final_nudge_lead_hours = 0
    db.session.commit()
    # Deadline Sunday 08:00: no weekday window is left before it. Tuesday 17:00: Monday 09:00 is.
    late = add(world, MON_10, deadline=at("2026-12-06T08:00:00-05:00"), email="late@example.com", name="Late")
    fine = add(world, MON_10, deadline=at("2026-12-08T17:00:00-05:00"), email="fine@example.com", name="Fine")
    tick(MON_10)
    for c in (late, fine):
        stages.move(db.session, c, Stage.STARTED, MON_10 + timedelta(hours=1))
    db.session.commit()
    result = plan(db.session, at("2026-12-06T07:00:00-05:00"))  # both rows go in one insert
    assert result.planned["nudge"] == 2
    nudge = {m.candidate_id: m for m in db.session.query(Message).filter_by(kind="nudge")}
    assert nudge[late.id].status == MessageStatus.CANCELLED and "before the deadline" in nudge[late.id].last_error
    assert nudge[fine.id].status == MessageStatus.SCHEDULED
    assert nudge[fine.id].scheduled_for == at("2026-12-07T09:00:00-05:00")


def test_nothing_is_planned_or_sent_for_an_archived_interview(world):
    c = add(world, MON_10)
    tick(MON_10)
    cs.send_invite(db.session, c, MON_10 + timedelta(hours=1), actor_id=None)  # queued before archiving
    world.archived_at = MON_10 + timedelta(hours=2)
    db.session.commit()
    result = tick(MON_10 + timedelta(hours=24))
    assert not result.sent and "archived" in result.cancelled[0]
    assert kinds(c) == [("invite", 1), ("invite", 2)]  # no reminder planned


# --- nudges at the latest allowed moment before the deadline --------------------------------

def _walk(start, end, step=timedelta(minutes=15)):
    """Tick every quarter of an hour from ``start`` to ``end`` (as the scheduler would, coarsely)."""
    t = start
    while t <= end:
        tick(t)
        t += step


def _sent_at(c, kind):
    m = db.session.query(Message).filter_by(candidate_id=c.id, kind=kind).one()
    return m.status, m.sent_at, m.last_error


def test_the_final_nudge_goes_out_with_the_default_rules(world, smtp):
    """Defect: deadlines are 23:59 local and the window ends at 18:00, so "2 h before the
    deadline" was always cancelled with "No moment in the send window before the deadline"."""
    deadline = at("2026-12-04T23:59:00-05:00")  # Friday 23:59 in New York
    c = add(world, MON_10, deadline=deadline)
    tick(MON_10)
    cs.stages.move(db.session, c, Stage.STARTED, MON_10 + timedelta(hours=1))
    db.session.commit()
    _walk(at("2026-12-03T08:00:00-05:00"), at("2026-12-04T23:30:00-05:00"))
    status, sent_at, error = _sent_at(c, "final_nudge")
    assert status == MessageStatus.SENT, error
    assert sent_at.astimezone(deadline.tzinfo) <= at("2026-12-04T18:00:00-05:00")
    assert deadline - sent_at >= timedelta(hours=2)


def test_a_starter_is_nudged_at_least_a_day_before_the_deadline(world, smtp):
    """Defect: searching forward from "deadline - 24 h" sent the nudge ~15 h before the deadline."""
    deadline = at("2026-12-04T23:59:00-05:00")
    c = add(world, MON_10, deadline=deadline)
    tick(MON_10)
    cs.stages.move(db.session, c, Stage.STARTED, MON_10 + timedelta(hours=1))
    db.session.commit()
    _walk(at("2026-12-03T08:00:00-05:00"), at("2026-12-04T12:00:00-05:00"))
    status, sent_at, error = _sent_at(c, "nudge")
    assert status == MessageStatus.SENT, error
    assert deadline - sent_at >= timedelta(hours=24)


def test_a_deadline_on_a_weekend_still_gets_its_nudge_on_the_friday(world, smtp):
    """Defect: the planner only searched forward from deadline - lead, which falls on Saturday."""
    deadline = at("2026-12-06T23:59:00-05:00")  # Sunday 23:59
    c = add(world, MON_10, deadline=deadline)
    tick(MON_10)
    cs.stages.move(db.session, c, Stage.STARTED, MON_10 + timedelta(hours=1))
    db.session.commit()
    _walk(at("2026-12-03T08:00:00-05:00"), at("2026-12-05T00:00:00-05:00"))
    status, sent_at, error = _sent_at(c, "nudge")
    assert status == MessageStatus.SENT, error
    assert sent_at.astimezone(deadline.tzinfo).isoweekday() == 5


def test_the_schedule_keeps_to_the_cap_and_to_what_the_planner_does(world, team_settings):
    """Defect: the candidate page's "upcoming" ignored the cap and listed nudges for people
    who never started, and showed "Nothing planned" with no reason."""
    team_settings.followup_cap = 1
    db.session.commit()
    c = add(world, MON_10)
    tick(MON_10)
    schedule = upcoming(db.session, c, MON_10 + timedelta(hours=1))
    assert [i.kind for i in schedule.items] == ["reminder"] and "cap" in schedule.note
    cs.stages.move(db.session, c, Stage.COMPLETED, MON_10 + timedelta(hours=2))
    db.session.commit()
    done = upcoming(db.session, c, MON_10 + timedelta(hours=3))
    assert done.items == [] and done.note == "Completed: nothing more is sent."


def test_the_schedule_shows_the_nudge_the_planner_will_send(world, smtp):
    deadline = at("2026-12-04T23:59:00-05:00")
    c = add(world, MON_10, deadline=deadline)
    tick(MON_10)
    cs.stages.move(db.session, c, Stage.STARTED, MON_10 + timedelta(hours=1))
    db.session.commit()
    schedule = upcoming(db.session, c, MON_10 + timedelta(hours=2))
    shown = {i.kind: i.when for i in schedule.items}
    _walk(at("2026-12-03T08:00:00-05:00"), at("2026-12-04T23:30:00-05:00"))
    sent = {m.kind: m.sent_at for m in db.session.query(Message).filter_by(candidate_id=c.id, status="sent")}
    assert shown["nudge"] == sent["nudge"] and shown["final_nudge"] == sent["final_nudge"]


def test_a_default_deadline_counts_its_days_from_the_invite_not_from_the_add(world, smtp, auth, client):
    """Defect: "Deadline (days after the invite)" counted from when the candidate was added: a
    Tokyo candidate added on a Friday and invited on the Monday got 4.6 days, not 7."""
    from zoneinfo import ZoneInfo

    from milo_portal.models import Candidate
    from milo_portal.candidates import views

    friday = at("2026-12-04T12:00:00+09:00")
    original = views.now
    views.now = lambda: friday
    try:
        client.post("/candidates/new", {"agent_id": world.id, "name": "Kenji Sato", "email": "kenji@example.jp",
                                        "phone": "", "timezone": "Asia/Tokyo", "channel": "email",
                                        "deadline": "", "invite_now": "y"})
        client.post("/candidates/new", {"agent_id": world.id, "name": "Fixed Date", "email": "fixed@example.jp",
                                        "phone": "", "timezone": "Asia/Tokyo", "channel": "email",
                                        "deadline": "2026-12-20", "invite_now": "y"})
    finally:
        views.now = original
    kenji = db.session.query(Candidate).filter_by(email="kenji@example.jp").one()
    fixed = db.session.query(Candidate).filter_by(email="fixed@example.jp").one()
    assert kenji.deadline_follows_invite and not fixed.deadline_follows_invite
    monday = at("2026-12-07T09:30:00+09:00")  # the first day a first invite may go
    tick(monday)
    db.session.refresh(kenji)
    db.session.refresh(fixed)
    local = kenji.deadline_at.astimezone(ZoneInfo("Asia/Tokyo"))
    assert (local.date().isoformat(), local.hour) == ("2026-12-14", 23)
    assert fixed.deadline_at.astimezone(ZoneInfo("Asia/Tokyo")).date().isoformat() == "2026-12-20"


def test_a_backlog_plans_reminder_2_only_after_reminder_1_has_gone(world, smtp):
    """Defect: after a pause (or with the demo data) one pass planned reminders 1 and 2 together,
    and two workers sent them to the same person a second apart."""
    c = add(world, MON_10)
    tick(MON_10)
    plan(db.session, MON_10 + timedelta(hours=49))
    assert kinds(c) == [("invite", 1), ("reminder", 1)]
    tick(MON_10 + timedelta(hours=49))
    assert kinds(c, MessageStatus.SENT) == [("invite", 1), ("reminder", 1)]
    plan(db.session, MON_10 + timedelta(hours=50))
    assert ("reminder", 2) in kinds(c)


def test_the_schedule_says_a_queued_invite_to_a_starter_will_be_cancelled(world):
    """A queued invite to someone who already started is shown as what will happen to it."""
    c = add(world, MON_10)  # invite queued
    cs.stages.move(db.session, c, Stage.STARTED, MON_10 + timedelta(minutes=5))
    db.session.commit()
    schedule = upcoming(db.session, c, MON_10 + timedelta(minutes=10))
    invite = next(i for i in schedule.items if i.kind == "invite")
    assert invite.status == "will_be_cancelled" and "opened their link" in invite.rule


def test_unicode_digits_in_the_rules_are_a_form_error_not_a_crash(auth, client, team_settings):
    """Defect: "24,²" passed str.isdigit() and then crashed int(): a 500 on Settings."""
    from milo_portal.followups.rules import parse_days, parse_hours

    assert parse_hours("24,²") == (24,) and parse_days("1,²") == frozenset({1})
    r = client.post("/settings/rules", {"t-window_start": "09:00", "t-window_end": "18:00", "t-send_days": ["1"],
                                        "t-initial_send_days": ["1"], "t-reminder_offsets_hours": "24,²",
                                        "t-nudge_lead_hours": "24", "t-final_nudge_lead_hours": "2",
                                        "t-followup_cap": "3", "t-min_spacing_auto_hours": "20",
                                        "t-min_spacing_manual_hours": "1"})
    assert r.status_code == 422


def test_the_schedule_shows_two_reminders_a_spacing_apart_as_the_dispatcher_sends_them(world):
    """Defect (trial): invited on a Friday, both reminders (24 h and 48 h after) fell on the
    weekend and the page showed both at Monday 09:00; the dispatcher sends the second one the
    minimum spacing (20 h) later, at the next allowed moment: Tuesday 09:00."""
    from milo_portal.candidates import stages

    friday = at("2026-11-27T10:00:00-05:00")
    c = add(world, friday - timedelta(hours=1), invite=False)
    stages.move(db.session, c, Stage.INVITED, friday)
    db.session.commit()
    schedule = upcoming(db.session, c, friday + timedelta(hours=1))
    assert [(i.kind, i.when) for i in schedule.items] == [
        ("reminder", at("2026-11-30T09:00:00-05:00")), ("reminder", at("2026-12-01T09:00:00-05:00"))]
    assert "minimum spacing" in schedule.items[1].rule
    # What the dispatcher really does at those moments.
    tick(at("2026-11-30T09:00:00-05:00"))
    tick(at("2026-11-30T09:01:00-05:00"))
    sent = db.session.scalars(select(Message).where(Message.candidate_id == c.id, Message.kind == "reminder",
                                                    Message.status == MessageStatus.SENT)).all()
    assert [m.step for m in sent] == [1]
    tick(at("2026-12-01T09:00:00-05:00"))
    sent = db.session.scalars(select(Message).where(Message.candidate_id == c.id, Message.kind == "reminder",
                                                    Message.status == MessageStatus.SENT)).all()
    assert sorted(m.step for m in sent) == [1, 2]
