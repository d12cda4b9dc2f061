"""Interview agents: create, edit, archive, inline questions and the Share panel."""
from __future__ import annotations

import re

from milo_portal.extensions import db
from milo_portal.models import Agent, Candidate, Question, Stage, User
from tests.conftest import make_agent

FORM = {
    "title": "Barista", "company": "Bean Co", "role_level": "entry", "description": "Coffee.",
    "duration_minutes": "10", "deadline_days": "5", "default_channel": "sms", "external_url": "",
}


def _form(user, **over):
    return {**FORM, "owner_id": str(user.id), **over}


def test_it_creates_an_agent_with_questions(auth, client, user):
    response = client.post("/agents/new", _form(user, questions="First?\n\nSecond?\n"))
    assert response.status_code == 302
    agent = db.session.query(Agent).one()
    assert (agent.title, agent.role_level, agent.default_channel, agent.owner_id) == ("Barista", "entry", "sms", user.id)
    assert [q.text for q in agent.questions] == ["First?", "Second?"]
    assert len(agent.share_token) >= 22
    # The next step it names fits what was made (it said "Add questions below" to an agent that had them).
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "It has 2 questions: press Share when you are ready." in page and "Add questions below" not in page


def test_it_shows_field_errors_and_saves_nothing(auth, client, user):
    body = client.post("/agents/new", _form(user, title="", deadline_days="0", external_url="not a url")).get_data(as_text=True)
    assert body.count('class="field-error"') == 3
    assert "This field is required." in body and "Enter a full address" in body
    assert db.session.query(Agent).count() == 0


def test_it_edits_an_agent(auth, client, user):
    agent = make_agent()
    response = client.post(f"/agents/{agent.id}/edit", _form(user, title="Head barista", external_url="https://tool.example/x"))
    assert response.status_code == 302
    db.session.refresh(agent)
    assert agent.title == "Head barista" and agent.external_url == "https://tool.example/x"


def test_unknown_agent_is_404(auth, client):
    assert client.get("/agents/999").status_code == 404
    assert client.post("/agents/999/archive", {"archived": "1"}).status_code == 404


def test_archiving_closes_the_share_link_and_moves_the_agent(auth, client):
    agent = make_agent()
    client.post(f"/agents/{agent.id}/archive", {"archived": "1"})
    db.session.refresh(agent)
    assert agent.archived_at is not None and not agent.share_open
    assert agent.title not in client.get("/agents").get_data(as_text=True)
    assert agent.title in client.get("/agents?archived=1").get_data(as_text=True)
    client.post(f"/agents/{agent.id}/archive", {"archived": "0"})
    db.session.refresh(agent)
    assert agent.archived_at is None and agent.share_open


def test_list_shows_the_funnel_with_the_metrics_definitions(auth, client):
    """The list counts everyone who reached a stage (one definition with the Metrics page):
    it used to add "opened" and "clicked" current stages into one "Clicked" column."""
    from milo_portal.clock import now

    agent = make_agent()
    t = now()
    people = [dict(stage=Stage.COMPLETED, invited_at=t, clicked_at=t, started_at=t, completed_at=t),
              dict(stage=Stage.COMPLETED, invited_at=t, started_at=t, completed_at=t),
              dict(stage=Stage.STARTED, invited_at=t, clicked_at=t, started_at=t),
              dict(stage=Stage.OPENED, invited_at=t),
              dict(stage=Stage.ADDED)]
    for i, fields in enumerate(people):
        db.session.add(Candidate(agent_id=agent.id, email=f"c{i}@x.test", **fields))
    db.session.commit()
    body = client.get("/agents").get_data(as_text=True)
    row = body.split(agent.title)[1].split("</tr>")[0]
    cells = [c.split(">", 1)[1].split("</td>")[0].strip() for c in row.split('<td class="num"')[1:]]
    # waiting, invited, clicked, started, completed (reached), completion of delivered, expired
    assert cells[:5] == ["1", "4", "3", "3", "2"] and cells[6] == "0"
    assert cells[5].endswith("50 %") and 'aria-label="Funnel: 4 invited, 3 clicked' in cells[5]


# --- questions --------------------------------------------------------------------------

def _texts(agent):
    db.session.expire_all()
    return [q.text for q in db.session.get(Agent, agent.id).questions]


def test_questions_are_added_edited_moved_and_removed_inline(auth, client):
    agent = make_agent(questions=("A?", "B?"))
    r = client.htmx_post(f"/agents/{agent.id}/questions", {"text": "C?"})
    assert r.status_code == 200 and 'id="questions-editor"' in r.get_data(as_text=True)
    assert "<html" not in r.get_data(as_text=True)  # a fragment, not the page
    assert _texts(agent) == ["A?", "B?", "C?"]

    c = db.session.query(Question).filter_by(text="C?").one()
    client.htmx_post(f"/agents/{agent.id}/questions/{c.id}/move", {"direction": "up"})
    assert _texts(agent) == ["A?", "C?", "B?"]
    client.htmx_post(f"/agents/{agent.id}/questions/{c.id}/move", {"direction": "up"})
    client.htmx_post(f"/agents/{agent.id}/questions/{c.id}/move", {"direction": "up"})  # already first
    assert _texts(agent) == ["C?", "A?", "B?"]

    r = client.htmx_get(f"/agents/{agent.id}/questions/{c.id}/edit")
    assert f'name="q{c.id}-text"' in r.get_data(as_text=True)
    client.htmx_post(f"/agents/{agent.id}/questions/{c.id}", {f"q{c.id}-text": "C, reworded?"})
    assert _texts(agent) == ["C, reworded?", "A?", "B?"]

    client.htmx_post(f"/agents/{agent.id}/questions/{c.id}/delete")
    assert _texts(agent) == ["A?", "B?"]
    assert [q.position for q in db.session.get(Agent, agent.id).questions] == [1, 2]


def test_an_empty_question_is_refused_next_to_the_field(auth, client):
    agent = make_agent(questions=())
    r = client.htmx_post(f"/agents/{agent.id}/questions", {"text": "   "})
    assert r.status_code == 422
    assert "Write the question first." in r.get_data(as_text=True)
    assert _texts(agent) == []


def test_questions_work_without_javascript(auth, client):
    agent = make_agent(questions=("A?",))
    r = client.post(f"/agents/{agent.id}/questions", {"text": "B?"})
    assert r.status_code == 302 and r.headers["Location"].endswith("#questions")
    assert _texts(agent) == ["A?", "B?"]


def test_a_question_of_another_agent_is_404(auth, client):
    one, two = make_agent("One"), make_agent("Two")
    q = two.questions[0]
    assert client.htmx_post(f"/agents/{one.id}/questions/{q.id}/delete").status_code == 404


# --- Share --------------------------------------------------------------------------------

def test_share_panel_shows_the_public_link(app, auth, client):
    agent = make_agent()
    r = client.htmx_get(f"/agents/{agent.id}/share")
    body = r.get_data(as_text=True)
    assert f"https://jobs.example.test/s/{agent.share_token}" in body
    assert "Copy link" in body and "<html" not in body
    # Without htmx the same URL is a whole page.
    assert "<html" in client.get(f"/agents/{agent.id}/share").get_data(as_text=True)


def test_share_link_uses_the_public_base_url_not_the_request_host(auth, client):
    agent = make_agent()
    body = client.htmx_get(f"/agents/{agent.id}/share", headers={"Host": "evil.example"}).get_data(as_text=True)
    assert "evil.example" not in body


def test_source_tag_builder_makes_a_tagged_link(auth, client):
    agent = make_agent()
    body = client.htmx_get(f"/agents/{agent.id}/share/tagged?src=LinkedIn Jobs!").get_data(as_text=True)
    assert f"/s/{agent.share_token}?src=linkedin-jobs" in body


def test_rotating_the_link_changes_the_token(auth, client):
    agent = make_agent()
    old = agent.share_token
    body = client.htmx_post(f"/agents/{agent.id}/share/rotate").get_data(as_text=True)
    db.session.refresh(agent)
    assert agent.share_token != old and agent.share_token in body and old not in body


def test_turning_the_link_off_and_on(auth, client):
    agent = make_agent()
    body = client.htmx_post(f"/agents/{agent.id}/share/enabled", {"enabled": "0"}).get_data(as_text=True)
    db.session.refresh(agent)
    assert agent.share_enabled is False and "Turn link on" in body
    client.htmx_post(f"/agents/{agent.id}/share/enabled", {"enabled": "1"})
    db.session.refresh(agent)
    assert agent.share_enabled is True


def test_qr_codes_download_as_svg_and_png(auth, client):
    agent = make_agent()
    svg = client.get(f"/agents/{agent.id}/share/qr.svg?download=1")
    assert svg.mimetype == "image/svg+xml" and b"<svg" in svg.data
    assert "attachment" in svg.headers["Content-Disposition"]
    png = client.get(f"/agents/{agent.id}/share/qr.png?src=flyer")
    assert png.mimetype == "image/png" and png.data.startswith(b"\x89PNG")
    assert client.get(f"/agents/{agent.id}/share/qr.gif").status_code == 404


def test_qr_code_encodes_the_exact_link(auth, client):
    import segno

    agent = make_agent()
    svg = client.get(f"/agents/{agent.id}/share/qr.svg?src=flyer").data
    expected = segno.make(f"https://jobs.example.test/s/{agent.share_token}?src=flyer", error="m")
    assert svg.count(b"<path") >= 1
    # Same link, same symbol: compare the matrices through a fresh encoding.
    import io
    buf = io.BytesIO()
    expected.save(buf, kind="svg", scale=10, border=4, title=agent.title)
    assert buf.getvalue().split(b"<path")[1] == svg.split(b"<path")[1]


def test_demo_data_refuses_a_database_with_real_logins(runner, app):
    """Defect: run after create-admin (as a new owner might), demo-data added two full-rights
    logins whose password the README prints, and 200 made-up people among the real ones."""
    from tests.conftest import make_user

    make_user("owner@acme.example", "Olive Owner")
    result = runner.invoke(args=["milo", "demo-data", "--candidates", "5"])
    assert result.exit_code == 2
    assert "owner@acme.example" in result.output and "demo.sqlite3 make run" in result.output
    assert db.session.query(User).count() == 1 and db.session.query(Candidate).count() == 0
    result = runner.invoke(args=["milo", "demo-data", "--candidates", "5", "--beside-real-logins"])
    assert result.exit_code == 0, result.output
    assert db.session.query(User).count() == 3 and db.session.query(Candidate).count() == 5


def test_demo_data_creates_a_team_agents_and_candidates_everywhere(runner, app, monkeypatch):
    """At a chosen instant: the history is drawn back from "now", and with the wall clock the
    600 candidates held no opted-out one at some hours of the day."""
    from milo_portal import clock
    from milo_portal.models import Answer, Event, SOURCES
    from tests.conftest import at

    instant = at("2026-11-26T09:00:00")
    monkeypatch.setattr(clock, "now", lambda: instant)
    result = runner.invoke(args=["milo", "demo-data", "--candidates", "600", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert db.session.query(Agent).count() == 3
    assert all(a.questions for a in db.session.query(Agent))
    assert db.session.query(Candidate).count() == 600
    assert {c.stage for c in db.session.query(Candidate)} == set(Stage.ALL)
    assert {c.source for c in db.session.query(Candidate)} == set(SOURCES)
    assert {c.device_class for c in db.session.query(Candidate)} >= {"mobile", "tablet", "desktop"}
    completed = db.session.query(Candidate).filter_by(stage=Stage.COMPLETED).filter(
        Candidate.source != "share_link").first()
    assert {e.type for e in db.session.query(Event).filter_by(candidate_id=completed.id)} >= {
        "added", "invited", "clicked", "started", "answered", "completed"}
    assert db.session.query(Answer).filter_by(candidate_id=completed.id).count() == len(completed.agent.questions)
    # People who came by the share link signed up through its form: clicked and started at
    # once, never invited (so the Metrics page's "came by a link" figures are not empty).
    signed_up = db.session.query(Candidate).filter_by(source="share_link").all()
    assert signed_up and all(c.invited_at is None and c.clicked_at == c.created_at for c in signed_up)
    assert any(c.stage == Stage.COMPLETED for c in signed_up)
    assert {e.type for e in db.session.query(Event).filter_by(candidate_id=signed_up[0].id)} >= {"clicked", "started"}
    result = runner.invoke(args=["milo", "demo-data", "--candidates", "10"])  # agents are not made twice
    assert db.session.query(Agent).count() == 3 and db.session.query(Candidate).count() == 610
    # Nobody real can be reached: reserved domains and fictional 555-01xx numbers only.
    people = db.session.query(Candidate).all()
    assert all(c.email.endswith(".example") for c in people if c.email)
    phones = [c.phone for c in people if c.phone]
    assert phones and all(re.fullmatch(r"\+1\d{3}55501\d{2}", p) for p in phones)


def test_follow_up_rules_can_be_overridden_per_agent_and_cleared(auth, client, user):
    agent = make_agent()
    r = client.post(f"/agents/{agent.id}/edit", {**_form(user), "window_start": "10:00", "window_end": "16:00",
                                                "send_days": ["1", "2"], "reminder_offsets_hours": "12, 6",
                                                "final_nudge_lead_hours": "0", "followup_cap": "1"})
    assert r.status_code == 302
    db.session.refresh(agent)
    assert (agent.window_start_minute, agent.window_end_minute, agent.send_days, agent.reminder_offsets_hours,
            agent.final_nudge_lead_hours, agent.followup_cap, agent.nudge_lead_hours) == (600, 960, "1,2", "6,12", 0, 1, None)
    page = client.get(f"/agents/{agent.id}/edit").get_data(as_text=True)
    assert 'value="10:00"' in page and 'value="6, 12"' in page
    empty = {name: "" for name in ("window_start", "window_end", "reminder_offsets_hours", "nudge_lead_hours",
                                    "final_nudge_lead_hours", "followup_cap")}  # as a browser sends cleared fields
    client.post(f"/agents/{agent.id}/edit", {**_form(user), **empty})
    db.session.refresh(agent)
    assert (agent.window_start_minute, agent.send_days, agent.followup_cap, agent.final_nudge_lead_hours) == (None,) * 4


def test_a_half_window_override_is_refused(auth, client, user):
    agent = make_agent()
    body = client.post(f"/agents/{agent.id}/edit", {**_form(user), "window_start": "10:00"}).get_data(as_text=True)
    assert "Give both the start and the end" in body


def test_agents_list_does_not_query_per_agent(app, auth, client, user):
    from sqlalchemy import event

    for i in range(15):
        make_agent(f"Agent {i}", owner_id=user.id)
    statements = []

    def count(*args):
        statements.append(args[2])

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        body = client.get("/agents").get_data(as_text=True)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert body.count(user.name) >= 15
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) <= 6, selects


def test_the_agent_page_funnel_boxes_say_which_stage_each_number_is(auth, client):
    """Defect: the agent page's small funnel showed bars (and numbers) with no visible stage name,
    only an aria-label."""
    from milo_portal.clock import now

    agent = make_agent()
    t = now()
    for i, fields in enumerate([dict(stage=Stage.COMPLETED, invited_at=t, clicked_at=t, started_at=t, completed_at=t),
                                dict(stage=Stage.STARTED, invited_at=t, clicked_at=t, started_at=t),
                                dict(stage=Stage.OPENED, invited_at=t)]):
        db.session.add(Candidate(agent_id=agent.id, email=f"f{i}@x.test", **fields))
    db.session.commit()
    body = client.get(f"/agents/{agent.id}").get_data(as_text=True)
    funnel = body[body.index('<ol class="stage-strip funnel-boxes">'):]
    funnel = funnel[:funnel.index("</ol>")]
    boxes = re.findall(r'<span class="stage-count">([^<]*)</span><span class="stage-label">([^<]*)</span>', funnel)
    assert boxes == [("3", "Invited"), ("3", "Delivered"), ("2", "Clicked"), ("2", "Started"), ("1", "Completed")]
    assert "visually-hidden" not in funnel
