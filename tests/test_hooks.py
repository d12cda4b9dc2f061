"""Twilio webhooks: signed delivery reports and inbound STOP/START/HELP."""
from __future__ import annotations

from datetime import timedelta

import pytest
from twilio.request_validator import RequestValidator

from milo_portal.clock import now
from milo_portal.extensions import db
from milo_portal.models import Candidate, Event, Message, MessageStatus
from tests.conftest import make_agent

TOKEN = "twilio-auth-token"
BASE = "https://jobs.example.test"


@pytest.fixture()
def signed(app, client):
    app.config["TWILIO_AUTH_TOKEN"] = TOKEN

    def post(path, form, signature=None):
        sig = signature or RequestValidator(TOKEN).compute_signature(BASE + path, form)
        return client.post(path, form, csrf=False, headers={"X-Twilio-Signature": sig})

    return post


def _people():
    agent, other = make_agent("One"), make_agent("Two")
    a = Candidate(agent_id=agent.id, name="A", phone="+14155550100", channel="sms", timezone="UTC",
                  deadline_at=now() + timedelta(days=2))
    b = Candidate(agent_id=other.id, name="A again", phone="+14155550100", channel="sms", timezone="UTC",
                  deadline_at=now() + timedelta(days=2))
    db.session.add_all([a, b])
    db.session.flush()
    for c in (a, b):
        db.session.add(Message(candidate_id=c.id, kind="reminder", step=1, channel="sms",
                               status=MessageStatus.SCHEDULED, scheduled_for=now() + timedelta(hours=3)))
        db.session.add(Message(candidate_id=c.id, kind="invite", step=1, channel="email",
                               status=MessageStatus.SCHEDULED, scheduled_for=now() + timedelta(hours=3)))
    db.session.commit()
    return a, b


@pytest.mark.parametrize("body", ["STOP", "stop", "  Stop ", "STOPALL", "unsubscribe", "Cancel", "END", "quit", "S T O P"])
def test_stop_words_opt_the_number_out_and_cancel_queued_texts(signed, body):
    a, b = _people()
    r = signed("/hooks/twilio/inbound", {"MessageSid": "SM1", "From": "+14155550100", "Body": body})
    assert r.status_code == 200 and r.mimetype == "text/xml"
    assert r.get_data(as_text=True).count("<Message>") == 1  # one confirmation
    for c in (a, b):
        db.session.refresh(c)
        assert c.opted_out_sms is True and c.opted_out_email is False
    statuses = {(m.channel, m.status) for m in db.session.query(Message)}
    assert statuses == {("sms", MessageStatus.CANCELLED), ("email", MessageStatus.SCHEDULED)}


def test_a_replayed_stop_is_processed_once(signed):
    _people()
    signed("/hooks/twilio/inbound", {"MessageSid": "SM1", "From": "+14155550100", "Body": "STOP"})
    r = signed("/hooks/twilio/inbound", {"MessageSid": "SM1", "From": "+14155550100", "Body": "STOP"})
    assert "<Message>" not in r.get_data(as_text=True)
    assert db.session.query(Event).filter_by(type="opted_out").count() == 2  # one per candidate, not four


def test_start_opts_back_in_and_help_answers_with_the_contact(signed, team_settings):
    a, _ = _people()
    signed("/hooks/twilio/inbound", {"MessageSid": "SM1", "From": "+14155550100", "Body": "STOP"})
    signed("/hooks/twilio/inbound", {"MessageSid": "SM2", "From": "+14155550100", "Body": "start"})
    db.session.refresh(a)
    assert a.opted_out_sms is False
    r = signed("/hooks/twilio/inbound", {"MessageSid": "SM3", "From": "+14155550100", "Body": "help"})
    assert "help@acme.example" in r.get_data(as_text=True)


def test_whatsapp_stop_opts_out_of_whatsapp_only(signed):
    a, _ = _people()
    signed("/hooks/twilio/inbound", {"MessageSid": "SM1", "From": "whatsapp:+14155550100", "Body": "STOP"})
    db.session.refresh(a)
    assert (a.opted_out_whatsapp, a.opted_out_sms) == (True, False)


@pytest.mark.parametrize("path", ["/hooks/twilio/inbound", "/hooks/twilio/status"])
def test_a_wrong_or_missing_signature_is_403_and_changes_nothing(signed, client, path):
    a, _ = _people()
    form = {"MessageSid": "SM1", "From": "+14155550100", "Body": "STOP", "MessageStatus": "delivered"}
    assert signed(path, form, signature="bm90IHRoZSByaWdodCBvbmU=").status_code == 403
    assert client.post(path, form, csrf=False).status_code == 403
    # Signed for another URL (a Host header trick) is wrong too.
    other = RequestValidator(TOKEN).compute_signature("https://evil.example" + path, form)
    assert signed(path, form, signature=other).status_code == 403
    db.session.refresh(a)
    assert a.opted_out_sms is False and db.session.query(Event).count() == 0


def test_webhooks_are_refused_when_twilio_is_not_configured(app, client):
    app.config["TWILIO_AUTH_TOKEN"] = None
    r = client.post("/hooks/twilio/inbound", {"MessageSid": "SM1", "From": "+1", "Body": "STOP"}, csrf=False,
                    headers={"X-Twilio-Signature": "x"})
    assert r.status_code == 403


@pytest.mark.parametrize("status,event,message_status", [
    ("delivered", "delivered", MessageStatus.SENT),
    ("undelivered", "failed", MessageStatus.FAILED),
    ("failed", "failed", MessageStatus.FAILED),
])
def test_status_callbacks_record_delivery(signed, status, event, message_status):
    a, _ = _people()
    m = Message(candidate_id=a.id, kind="invite", step=2, channel="sms", status=MessageStatus.SENT,
                scheduled_for=now(), provider_id="SMabc", sent_at=now())
    db.session.add(m)
    db.session.commit()
    r = signed("/hooks/twilio/status", {"MessageSid": "SMabc", "MessageStatus": status, "ErrorCode": "30003"})
    assert r.status_code == 204
    db.session.refresh(m)
    assert m.status == message_status
    e = db.session.query(Event).filter_by(type=event).one()
    assert (e.message_id, e.channel, e.candidate_id) == (m.id, "sms", a.id)
    # The same report again adds nothing.
    signed("/hooks/twilio/status", {"MessageSid": "SMabc", "MessageStatus": status, "ErrorCode": "30003"})
    assert db.session.query(Event).filter_by(type=event).count() == 1


def test_hooks_need_no_csrf_token_but_admin_posts_do(signed, client):
    _people()
    assert signed("/hooks/twilio/inbound", {"MessageSid": "SM9", "From": "+14155550100", "Body": "hello"}).status_code == 200


def _sent_sms(candidate):
    m = Message(candidate_id=candidate.id, kind="invite", step=2, channel="sms", status=MessageStatus.SENT,
                scheduled_for=now(), provider_id="SMabc", sent_at=now())
    db.session.add(m)
    db.session.commit()
    return m


@pytest.mark.parametrize("late", ["failed", "undelivered"])
def test_a_failure_report_after_delivered_is_ignored(signed, late):
    """Defect: a "failed" delivery report arriving after "delivered" marked the message failed:
    status callbacks may arrive in any order, and they only move forward."""
    a, _ = _people()
    m = _sent_sms(a)
    for status in ("sent", "delivered", late):
        assert signed("/hooks/twilio/status", {"MessageSid": "SMabc", "MessageStatus": status}).status_code == 204
    db.session.refresh(m)
    assert m.status == MessageStatus.SENT and m.last_error is None
    assert [e.type for e in db.session.query(Event).filter_by(message_id=m.id)] == ["delivered"]


def test_delivered_after_a_failure_report_is_ignored_too(signed):
    """Only the first final report counts, whichever arrives first."""
    a, _ = _people()
    m = _sent_sms(a)
    signed("/hooks/twilio/status", {"MessageSid": "SMabc", "MessageStatus": "undelivered", "ErrorCode": "30003"})
    signed("/hooks/twilio/status", {"MessageSid": "SMabc", "MessageStatus": "delivered"})
    db.session.refresh(m)
    assert m.status == MessageStatus.FAILED and m.last_error == "Twilio undelivered (error 30003)"
    assert [e.type for e in db.session.query(Event).filter_by(message_id=m.id)] == ["failed"]


@pytest.mark.parametrize("status", ["queued", "sending", "sent", "read", "accepted"])
def test_reports_that_are_not_final_change_nothing(signed, status):
    a, _ = _people()
    m = _sent_sms(a)
    assert signed("/hooks/twilio/status", {"MessageSid": "SMabc", "MessageStatus": status}).status_code == 204
    db.session.refresh(m)
    assert m.status == MessageStatus.SENT and db.session.query(Event).filter_by(message_id=m.id).count() == 0
