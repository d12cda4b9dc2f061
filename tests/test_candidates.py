"""Add Candidates (manually), the list, the candidate page and its actions."""
from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from markupsafe import escape
from zoneinfo import ZoneInfo

from milo_portal.candidates import services
from milo_portal.clock import now

from milo_portal.extensions import db
from milo_portal.models import Answer, Candidate, Event, Message, MessageStatus, Stage
from milo_portal.settings.services import get_settings
from tests.conftest import make_agent

BASE = {"name": "Ada Lovelace", "email": "ada@example.com", "phone": "", "timezone": "Europe/London",
        "channel": "email", "deadline": "", "invite_now": "y"}


def _add(client, agent, **over):
    return client.post("/candidates/new", {**BASE, "agent_id": str(agent.id), **over})


def test_add_candidates_menu_lists_every_way_in(auth, client):
    agent = make_agent()
    for url in (f"/agents/{agent.id}", "/candidates"):
        body = client.get(url).get_data(as_text=True)
        assert "Add Candidates" in body
        for entry in ("Add manually", "Bulk upload", "Webhook / API", "ATS", "Indeed"):
            assert entry in body, (url, entry)
        # Ways in that are not built yet are marked in the menu itself, before anyone clicks.
        assert "not available yet" not in body  # every way in is built


@pytest.mark.parametrize("method, target", [
    ("bulk", "/candidates/uploads/new"), ("api", "/integrations?focus=api"), ("ats", "/integrations?focus=ats"),
    ("indeed", "/integrations?focus=indeed")])
def test_the_earlier_add_candidates_links_lead_to_the_pages_that_do_it(auth, client, method, target):
    response = client.get(f"/candidates/add/{method}")
    assert response.status_code == 302 and response.headers["Location"].startswith(target)
    assert client.get("/candidates/add/fax").status_code == 404


def test_it_adds_a_candidate_queues_the_invite_and_shows_the_unique_link(auth, client, user):
    agent = make_agent(deadline_days=7)
    response = _add(client, agent)
    assert response.status_code == 302
    c = db.session.query(Candidate).one()
    assert (c.name, c.email, c.source, c.stage, c.created_by_id) == ("Ada Lovelace", "ada@example.com", "manual", "added", user.id)
    assert len(c.token) >= 22
    message = db.session.query(Message).one()
    assert (message.kind, message.step, message.channel, message.status) == ("invite", 1, "email", MessageStatus.SCHEDULED)
    assert [e.type for e in db.session.query(Event).filter_by(candidate_id=c.id)] == ["added"]
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert f"https://jobs.example.test/i/{c.token}" in page and "Copy link" in page
    # Deadline: 7 days from today, end of that day in the candidate's zone.
    local = c.deadline_at.astimezone(ZoneInfo("Europe/London"))
    assert (local.hour, local.minute) == (23, 59)


def test_the_invite_queued_on_add_says_it_waits_for_the_next_allowed_time(auth, client):
    """The form's box reads "Invite (at the next allowed time)": the outbox and the candidate's
    page said "Invite now, on add" for the same invite, due days later."""
    _add(client, make_agent())
    message = db.session.query(Message).one()
    assert message.rule == "Invite on add, at the next allowed time"
    assert "now" not in message.rule


def test_without_invite_now_nothing_is_queued(auth, client):
    agent = make_agent()
    _add(client, agent, invite_now="")
    assert db.session.query(Message).count() == 0
    assert db.session.query(Candidate).one().stage == Stage.ADDED


def test_link_sent_by_hand_counts_as_invited(auth, client):
    agent = make_agent()
    _add(client, agent, channel="link")
    c = db.session.query(Candidate).one()
    assert c.stage == Stage.INVITED and db.session.query(Message).count() == 0
    assert db.session.query(Event).filter_by(type="invited", channel="link").count() == 1


def test_adding_the_same_email_opens_the_existing_candidate(auth, client):
    agent = make_agent()
    _add(client, agent)
    first = db.session.query(Candidate).one()
    response = _add(client, agent, name="Ada L.", email="ADA@example.com")
    assert response.headers["Location"] == f"/candidates/{first.id}"
    assert db.session.query(Candidate).count() == 1
    assert "was already added to this interview" in client.get(response.headers["Location"]).get_data(as_text=True)


def test_the_same_person_can_be_added_to_another_agent(auth, client):
    _add(client, make_agent("One"))
    _add(client, make_agent("Two"))
    assert db.session.query(Candidate).count() == 2


@pytest.mark.parametrize("over,field,message", [
    ({"email": "not-an-email"}, "email", "This e-mail address is not valid"),
    ({"email": "", "phone": "12"}, "phone", "This is not a valid phone number"),
    ({"email": "", "phone": ""}, "email", "Give an e-mail address or a phone number"),
    ({"channel": "sms", "phone": ""}, "phone", "SMS is the chosen channel"),
    ({"name": ""}, "name", "Enter the candidate's name."),
    ({"deadline": "2001-01-01"}, "deadline", "The deadline cannot be in the past."),
])
def test_bad_input_is_shown_next_to_the_field_and_nothing_is_saved(auth, client, over, field, message):
    agent = make_agent()
    response = _add(client, agent, **over)
    body = response.get_data(as_text=True)
    assert response.status_code == 422
    assert f'id="{field}-error">{escape(message)}' in body
    assert 'aria-invalid="true"' in body
    assert db.session.query(Candidate).count() == 0 and db.session.query(Message).count() == 0


def test_phone_is_stored_in_e164_against_the_default_country(auth, client):
    settings = get_settings(db.session)
    settings.default_country = "GB"
    db.session.commit()
    response = _add(client, make_agent(), email="", phone="07911 123456", channel="sms", timezone="")
    assert response.status_code == 302, response.get_data(as_text=True).split('field-error')[1][:200]
    c = db.session.query(Candidate).one()
    assert c.phone == "+447911123456" and c.timezone == "Europe/London"


def test_inline_validation_returns_the_field_and_fills_the_time_zone_from_the_phone(auth, client):
    agent = make_agent()
    response = client.htmx_post("/candidates/new/validate", {**BASE, "agent_id": agent.id, "phone": "+81 90-1234-5678",
                                                             "timezone": "UTC"},
                                headers={"HX-Trigger-Name": "phone"})
    body = response.get_data(as_text=True)
    assert 'id="wrap-phone"' in body and "field-error" not in body
    assert 'id="wrap-timezone" hx-swap-oob="true"' in body
    assert '<option selected value="Asia/Tokyo">' in body or 'value="Asia/Tokyo" selected' in body
    # Chosen by hand: left alone.
    body = client.htmx_post("/candidates/new/validate", {**BASE, "agent_id": agent.id, "phone": "+81 90-1234-5678",
                                                         "timezone": "UTC", "timezone_touched": "1"},
                            headers={"HX-Trigger-Name": "phone"}).get_data(as_text=True)
    assert "wrap-timezone" not in body


def test_inline_validation_shows_the_error_for_that_field_only(auth, client):
    agent = make_agent()
    body = client.htmx_post("/candidates/new/validate", {**BASE, "agent_id": agent.id, "email": "bad@", "name": ""},
                            headers={"HX-Trigger-Name": "email"}).get_data(as_text=True)
    assert 'id="email-error"' in body and "name-error" not in body
    assert db.session.query(Candidate).count() == 0


# --- list ---------------------------------------------------------------------------------

def _people(agent, n, **fields):
    out = []
    for i in range(n):
        c = Candidate(agent_id=agent.id, name=f"Person {i:03d}", email=f"p{i}@example.com", **fields)
        db.session.add(c)
        out.append(c)
    db.session.commit()
    return out


def _link(body: str, rel: str) -> str:
    """The URL of the pager's link with this rel (next, prev), unescaped."""
    import html
    import re

    match = re.search(r'<a href="([^"]+)"[^>]*rel="%s"' % rel, body)
    assert match, f"no {rel} link"
    return "/candidates" + html.unescape(match.group(1))


def test_list_filters_searches_sorts_and_pages(auth, client):
    one, two = make_agent("Welder"), make_agent("Painter")
    _people(one, 60)
    db.session.add(Candidate(agent_id=two.id, name="Grace Hopper", email="grace@navy.test", phone="+14155550100",
                             stage=Stage.STARTED, source="share_link", source_detail="linkedin"))
    db.session.commit()
    body = client.get("/candidates").get_data(as_text=True)
    assert "61 candidates" in body and "Page 1 of 2" in body
    # Pages are keyset pages: page 2 is the "Next" link (a cursor), no longer ?page=2.
    page2 = client.get(_link(body, "next")).get_data(as_text=True)
    assert page2.count('name="ids"') == 11 and "Page 2 of 2" in page2
    assert "Grace Hopper" in client.get("/candidates?q=grace").get_data(as_text=True)
    assert ">1 candidate</span>" in client.get("/candidates?q=555 0100").get_data(as_text=True)
    assert ">1 candidate</span>" in client.get("/candidates?stage=started").get_data(as_text=True)
    assert ">1 candidate</span>" in client.get("/candidates?source=share_link").get_data(as_text=True)
    assert "60 candidates" in client.get(f"/candidates?agent_id={one.id}").get_data(as_text=True)
    names = client.get("/candidates?sort=name&dir=asc").get_data(as_text=True)
    assert names.index("Grace Hopper") < names.index("Person 000")


def test_live_search_returns_only_the_results_fragment(auth, client):
    _people(make_agent(), 3)
    response = client.get("/candidates?q=person", headers={"HX-Request": "true", "HX-Target": "candidate-results"})
    body = response.get_data(as_text=True)
    assert body.lstrip().startswith('<div id="candidate-results">') and "<html" not in body


def test_search_treats_wildcards_literally(auth, client):
    _people(make_agent(), 3)
    assert "0 candidates" in client.get("/candidates?q=%25").get_data(as_text=True)


def test_list_does_not_query_per_row(app, auth, client):
    from sqlalchemy import event

    agent = make_agent()
    _people(agent, 40)
    statements = []

    def count(*args):
        statements.append(args[2])

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        client.get("/candidates")
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) <= 8, selects


def test_export_csv_neutralises_formulas(auth, client):
    agent = make_agent()
    db.session.add(Candidate(agent_id=agent.id, name="=HYPERLINK(\"http://x\")", email="f@example.com"))
    db.session.add(Candidate(agent_id=agent.id, name="@SUM(1)", email="g@example.com"))
    db.session.commit()
    response = client.get("/candidates/export.csv")
    assert response.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0][:3] == ["id", "name", "email"]
    assert {r[1] for r in rows[1:]} == {"'=HYPERLINK(\"http://x\")", "'@SUM(1)"}


def test_bulk_invite_nudge_extend_and_export(auth, client):
    agent = make_agent()
    added = _people(agent, 2)
    started = Candidate(agent_id=agent.id, name="S", email="s@example.com", stage=Stage.STARTED,
                        deadline_at=now() + timedelta(days=2))
    db.session.add(started)
    db.session.commit()
    ids = [c.id for c in added] + [started.id]
    client.post("/candidates/bulk", {"action": "invite", "ids": ids, "extend_days": "3"})
    assert db.session.query(Message).filter_by(kind="invite").count() == 2
    client.post("/candidates/bulk", {"action": "nudge", "ids": ids, "extend_days": "3"})
    assert db.session.query(Message).filter_by(kind="manual_nudge").count() == 1
    before = started.deadline_at
    client.post("/candidates/bulk", {"action": "extend", "ids": [started.id], "extend_days": "3"})
    db.session.refresh(started)
    assert started.deadline_at - before == timedelta(days=3)
    response = client.post("/candidates/bulk", {"action": "export", "ids": [started.id], "extend_days": "3"})
    exported = client.get(response.headers["Location"]).get_data(as_text=True)
    assert exported.count("\n") == 2


# --- candidate page -------------------------------------------------------------------------

def _one(agent=None, **fields):
    agent = agent or make_agent()
    c = Candidate(agent_id=agent.id, name=fields.pop("name", "Ada"), email=fields.pop("email", "ada@example.com"),
                  timezone="Asia/Tokyo", **fields)
    db.session.add(c)
    db.session.commit()
    return c


def test_candidate_page_shows_timeline_in_both_zones_and_answers(auth, client, user):
    from tests.conftest import at

    c = _one(stage=Stage.CLICKED, device_class="mobile")
    db.session.add(Event(candidate_id=c.id, agent_id=c.agent_id, type="clicked", at=at("2026-12-01T00:30:00"),
                         device_class="mobile"))
    db.session.add(Answer(candidate_id=c.id, position=1, question_text="Why us?", body="Because.",
                          answered_at=at("2026-12-01T00:40:00")))
    db.session.commit()
    body = client.get(f"/candidates/{c.id}").get_data(as_text=True)
    assert "Tue 01 Dec 2026 00:30 UTC" in body and "Tue 01 Dec 2026 09:30 JST" in body
    assert "mobile" in body and "Because." in body and "Why us?" in body


def test_resend_invite_and_nudge_now_queue_messages(auth, client):
    from milo_portal.clock import now

    c = _one(stage=Stage.STARTED, deadline_at=now() + timedelta(days=1))
    client.post(f"/candidates/{c.id}/invite")
    client.post(f"/candidates/{c.id}/nudge")
    kinds = sorted(m.kind for m in db.session.query(Message))
    assert kinds == ["invite", "manual_nudge"]
    body = client.get(f"/candidates/{c.id}").get_data(as_text=True)
    assert "Upcoming follow-ups" in body and "manual nudge" in body and "scheduled" in body


def test_a_starters_page_offers_nudge_now_not_the_invite_again(auth, client):
    """A candidate who started has their link: "Resend invite" and "Send now" (the invite at
    once) were still offered beside **Nudge now**."""
    from milo_portal.clock import now

    started = _one(stage=Stage.STARTED, deadline_at=now() + timedelta(days=1))
    body = client.get(f"/candidates/{started.id}").get_data(as_text=True)
    assert "Nudge now" in body and "Resend invite" not in body and ">Send now<" not in body
    clicked = _one(stage=Stage.CLICKED, deadline_at=now() + timedelta(days=1), email="other@example.com")
    body = client.get(f"/candidates/{clicked.id}").get_data(as_text=True)
    assert "Resend invite" in body and "Nudge now" not in body


def test_nudge_now_is_refused_for_someone_who_has_not_started(auth, client):
    c = _one(stage=Stage.INVITED)
    client.post(f"/candidates/{c.id}/nudge")
    assert db.session.query(Message).count() == 0


def test_nudge_now_respects_opt_out(auth, client):
    from milo_portal.clock import now

    c = _one(stage=Stage.STARTED, deadline_at=now() + timedelta(days=1), opted_out_email=True)
    response = client.post(f"/candidates/{c.id}/nudge")
    assert db.session.query(Message).count() == 0
    assert "opted out of E-mail" in client.get(response.headers["Location"]).get_data(as_text=True)


def test_opting_out_cancels_queued_messages_on_that_channel(auth, client):
    c = _one()
    client.post(f"/candidates/{c.id}/invite")
    client.post(f"/candidates/{c.id}/opt-out", {"channel": "email", "out": "1"})
    db.session.refresh(c)
    assert c.opted_out_email is True
    assert db.session.query(Message).one().status == MessageStatus.CANCELLED
    assert db.session.query(Event).filter_by(type="opted_out", channel="email").count() == 1


def test_extending_the_deadline_reopens_an_expired_candidate(auth, client):
    from milo_portal.clock import now

    c = _one(stage=Stage.EXPIRED, started_at=now() - timedelta(days=3))
    target = (now() + timedelta(days=10)).date().isoformat()
    client.post(f"/candidates/{c.id}/deadline", {"deadline": target})
    db.session.refresh(c)
    assert c.stage == Stage.STARTED
    assert db.session.query(Event).filter_by(type="deadline_extended").count() == 1


def test_a_deadline_in_the_past_is_refused_next_to_the_field(auth, client):
    c = _one()
    response = client.post(f"/candidates/{c.id}/deadline", {"deadline": "2001-01-01"})
    assert response.status_code == 422 and "cannot be in the past" in response.get_data(as_text=True)


def test_editing_contact_details_validates(auth, client):
    agent = make_agent()
    _one(agent, email="taken@example.com", name="Other")
    c = _one(agent)
    response = client.post(f"/candidates/{c.id}/edit", {"name": "Ada", "email": "taken@example.com", "phone": "",
                                                      "timezone": "Asia/Tokyo", "channel": "email"})
    assert response.status_code == 422 and "already has this e-mail" in response.get_data(as_text=True)
    client.post(f"/candidates/{c.id}/edit", {"name": "Ada K", "email": "ada2@example.com", "phone": "+14155550100",
                                           "timezone": "America/Los_Angeles", "channel": "sms"})
    db.session.refresh(c)
    assert (c.name, c.email, c.phone, c.channel) == ("Ada K", "ada2@example.com", "+14155550100", "sms")


def test_delete_erases_personal_data_but_keeps_anonymous_events(auth, client):
    from tests.conftest import at

    c = _one(stage=Stage.COMPLETED)
    old_token = c.token
    db.session.add(Event(candidate_id=c.id, agent_id=c.agent_id, type="completed", at=at("2026-12-01T10:00:00")))
    db.session.add(Answer(candidate_id=c.id, position=1, question_text="Q", body="secret answer", answered_at=at("2026-12-01T10:00:00")))
    db.session.commit()
    client.post(f"/candidates/{c.id}/delete")
    db.session.expire_all()
    c = db.session.get(Candidate, c.id)
    assert (c.name, c.email, c.phone) == (None, None, None) and c.erased_at is not None
    assert db.session.query(Answer).count() == 0
    assert db.session.query(Event).filter_by(candidate_id=c.id, type="completed").count() == 1
    assert client.get(f"/candidates/{c.id}").status_code == 404
    assert client.get(f"/i/{old_token}").status_code == 404


def test_mark_completed_for_an_external_interview(auth, client):
    agent = make_agent(external_url="https://tool.example/iv")
    c = _one(agent, stage=Stage.STARTED)
    client.post(f"/candidates/{c.id}/complete")
    db.session.refresh(c)
    assert c.stage == Stage.COMPLETED


XSS = "<script>alert(1)</script>"


def test_a_hostile_name_is_escaped_everywhere(auth, client):
    agent = make_agent()
    c = _one(agent, name=XSS, stage=Stage.STARTED)
    for url in ("/candidates", f"/candidates/{c.id}", f"/candidates?agent_id={agent.id}", f"/i/{c.token}"):
        body = client.get(url, follow_redirects=True).get_data(as_text=True)
        assert XSS not in body, url
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in client.get(f"/candidates/{c.id}").get_data(as_text=True)


def test_a_long_export_does_not_block_writers(app):
    """While a CSV export streams, another connection can still write (SQLite: no write lock held)."""
    import time as _time

    from sqlalchemy.orm import Session

    agent = make_agent()
    agent_id = agent.id
    db.session.add_all([Candidate(agent_id=agent_id, name=f"E{i}", email=f"e{i}@example.com") for i in range(3000)])
    db.session.commit()
    db.session.get(Candidate, 1)  # the session is inside a transaction, as a request would be
    stream = services.export_csv(db.session, services.ListFilters())
    assert next(stream).startswith("id,name")
    started = _time.monotonic()
    with Session(db.engine) as other:
        other.add(Candidate(agent_id=agent_id, name="Writer", email="writer@example.com"))
        other.commit()
    assert _time.monotonic() - started < 2
    assert sum(chunk.count("\n") for chunk in stream) >= 1
    db.session.rollback()


def test_a_bulk_action_comes_back_to_the_same_filtered_list(auth, client):
    agent = make_agent()
    c = _one(agent)
    response = client.post(f"/candidates/bulk?stage=added&agent_id={agent.id}&q=ada",
                           {"action": "invite", "ids": [c.id], "extend_days": "3"})
    location = response.headers["Location"]
    assert "stage=added" in location and f"agent_id={agent.id}" in location and "q=ada" in location


def test_bulk_invite_skips_someone_whose_invite_is_still_queued(auth, client):
    """Defect: bulk "Send invite" looked only at the stage and queued a second invite."""
    c = _one(stage=Stage.ADDED)
    client.post(f"/candidates/{c.id}/invite")
    client.post("/candidates/bulk", {"action": "invite", "ids": [c.id], "extend_days": "3"})
    assert db.session.query(Message).filter_by(kind="invite").count() == 1


def test_send_now_sends_the_queued_invite_at_once_instead_of_a_second_one(auth, client):
    c = _one(stage=Stage.ADDED)
    client.post(f"/candidates/{c.id}/invite")
    client.post(f"/candidates/{c.id}/send-now")
    invite = db.session.query(Message).filter_by(kind="invite").one()
    assert invite.immediate is True


def test_a_completed_candidates_page_shows_the_answers_first(auth, client):
    c = _one(stage=Stage.COMPLETED)
    db.session.add(Answer(candidate_id=c.id, position=1, question_text="Why us?", body="Because.", answered_at=now()))
    db.session.commit()
    body = client.get(f"/candidates/{c.id}").get_data(as_text=True)
    assert body.index("<h2>Answers</h2>") < body.index("<h2>Details</h2>") < body.index("<h2>Timeline</h2>")
    started = _one(stage=Stage.STARTED, email="s@example.com", name="S")
    body = client.get(f"/candidates/{started.id}").get_data(as_text=True)
    assert body.index("<h2>Details</h2>") < body.index("<h2>Answers</h2>") < body.index("<h2>Timeline</h2>")


def test_the_timeline_shows_how_someone_was_added_as_a_label(auth, client):
    """Defect: a share-link sign-up's timeline said "added … share_link" (the stored source), and
    its channel column "email"."""
    moment = now()
    agent = make_agent()
    contact = services.CleanContact(name="Sue Share", email="sue@example.com", phone=None, timezone="UTC",
                                    channel="email")
    shared, _ = services.add_candidate(db.session, agent, contact, moment + timedelta(days=7), moment,
                                       source="share_link", source_detail="linkedin")
    db.session.add(Event(candidate_id=shared.id, agent_id=agent.id, type="opened", at=moment, channel="email"))
    manual, _ = services.add_candidate(db.session, agent, services.CleanContact(
        name="Max Manual", email="max@example.com", phone=None, timezone="UTC", channel="email"),
        moment + timedelta(days=7), moment, source="manual")
    db.session.commit()
    body = client.get(f"/candidates/{shared.id}").get_data(as_text=True)
    timeline = body[body.index('<table class="timeline'):body.index("</table>", body.index('<table class="timeline'))]
    assert '<td data-label="Detail"><small>Share link</small></td>' in timeline
    assert '<td data-label="Channel">E-mail</td>' in timeline
    assert "share_link" not in timeline and ">email<" not in timeline
    body = client.get(f"/candidates/{manual.id}").get_data(as_text=True)
    assert '<td data-label="Detail"><small>Added manually</small></td>' in body
