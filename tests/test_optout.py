"""Unsubscribe links and the open pixel."""
from __future__ import annotations

from datetime import timedelta

from milo_portal.clock import now
from milo_portal.extensions import db
from milo_portal.models import Candidate, Event, Message, MessageStatus, Stage
from tests.conftest import make_agent


def _candidate_with_queue(stage=Stage.INVITED):
    agent = make_agent()
    c = Candidate(agent_id=agent.id, name="Ada", email="ada@example.com", phone="+14155550100", timezone="UTC",
                  stage=stage, deadline_at=now() + timedelta(days=2))
    db.session.add(c)
    db.session.flush()
    db.session.add_all([
        Message(candidate_id=c.id, kind="reminder", step=1, channel="email", status=MessageStatus.SCHEDULED,
                scheduled_for=now() + timedelta(hours=5)),
        Message(candidate_id=c.id, kind="reminder", step=2, channel="sms", status=MessageStatus.SCHEDULED,
                scheduled_for=now() + timedelta(hours=5)),
    ])
    db.session.commit()
    return c


def test_get_shows_a_confirmation_and_changes_nothing(client):
    c = _candidate_with_queue()
    r = client.get(f"/u/{c.token}")
    assert r.status_code == 200 and "Stop e-mails about this interview?" in r.get_data(as_text=True)
    db.session.refresh(c)
    assert c.opted_out_email is False
    assert {m.status for m in db.session.query(Message)} == {MessageStatus.SCHEDULED}


def test_one_click_post_without_cookies_or_csrf_opts_out_and_cancels_queued_email(app):
    c = _candidate_with_queue()
    bare = app.test_client(use_cookies=False)
    r = bare.post(f"/u/{c.token}", data={"List-Unsubscribe": "One-Click"})
    assert r.status_code == 200 and "no more e-mails" in r.get_data(as_text=True)
    db.session.refresh(c)
    assert c.opted_out_email is True and c.opted_out_sms is False
    statuses = {m.channel: m.status for m in db.session.query(Message)}
    assert statuses == {"email": MessageStatus.CANCELLED, "sms": MessageStatus.SCHEDULED}
    assert db.session.query(Event).filter_by(type="opted_out", channel="email", detail="one-click").count() == 1
    # Again: nothing more happens.
    bare.post(f"/u/{c.token}", data={"List-Unsubscribe": "One-Click"})
    assert db.session.query(Event).filter_by(type="opted_out").count() == 1


def test_opted_out_is_visible_on_the_candidate_page(app, auth, client):
    c = _candidate_with_queue()
    app.test_client(use_cookies=False).post(f"/u/{c.token}", data={"List-Unsubscribe": "One-Click"})
    body = client.get(f"/candidates/{c.id}").get_data(as_text=True)
    assert "E-mail: opted out" in body


def test_opted_out_channel_is_never_used_again(app, auth, client):
    c = _candidate_with_queue()
    app.test_client(use_cookies=False).post(f"/u/{c.token}", data={"List-Unsubscribe": "One-Click"})
    client.post(f"/candidates/{c.id}/invite")
    assert db.session.query(Message).filter_by(kind="invite").count() == 0


def test_wrong_unsubscribe_token_is_404(client):
    assert client.get("/u/not-a-real-token-123456").status_code == 404
    assert client.post("/u/not-a-real-token-123456", csrf=False).status_code == 404


def test_open_pixel_records_opened_once_and_always_answers_a_gif(client):
    c = _candidate_with_queue()
    m = db.session.query(Message).first()
    for _ in range(2):
        r = client.get(f"/t/o/{c.token}/{m.id}.gif")
        assert r.status_code == 200 and r.mimetype == "image/gif" and r.data.startswith(b"GIF89a")
    db.session.refresh(c)
    assert c.stage == Stage.OPENED
    assert db.session.query(Event).filter_by(type="opened", message_id=m.id).count() == 1
    assert client.get(f"/t/o/wrong-token-wrong-token/{m.id}.gif").status_code == 200


def test_an_open_never_moves_a_candidate_back(client):
    c = _candidate_with_queue(stage=Stage.STARTED)
    m = db.session.query(Message).first()
    client.get(f"/t/o/{c.token}/{m.id}.gif")
    db.session.refresh(c)
    assert c.stage == Stage.STARTED
