"""Sending through real servers on loopback: SMTP (aiosmtpd) and a Twilio-shaped HTTP API."""
from __future__ import annotations

import time
from datetime import timedelta
from email.utils import parsedate_to_datetime

import pytest

from milo_portal.clock import now
from milo_portal.extensions import db
from milo_portal.messaging import channels
from milo_portal.messaging.services import send_message
from milo_portal.models import Candidate, Message, MessageStatus
from tests.conftest import make_agent, make_user, use_smtp
from tests.servers import FakeTwilio, SilentServer, free_port


def _candidate(**fields):
    owner = make_user("owner@acme.example", "Rita Recruiter")
    agent = make_agent("Analyst", owner_id=owner.id, duration_minutes=15)
    c = Candidate(agent_id=agent.id, name=fields.pop("name", "Ada Lovelace"), email=fields.pop("email", "ada@example.com"),
                  phone=fields.pop("phone", "+14155550100"), timezone="Europe/Berlin",
                  deadline_at=now() + timedelta(days=3), channel=fields.pop("channel", "email"), **fields)
    db.session.add(c)
    db.session.commit()
    return c


def _message(c, kind="invite", channel=None):
    m = Message(candidate_id=c.id, kind=kind, step=1, channel=channel or c.channel, status=MessageStatus.SENDING,
                scheduled_for=now())
    db.session.add(m)
    db.session.commit()
    return m


def test_an_invite_arrives_at_a_real_smtp_server_with_the_right_headers(app, smtp, team_settings):
    c = _candidate()
    m = _message(c)
    result = send_message(db.session, m, team_settings)
    assert result.ok, result.error
    received = smtp.wait_for(1)[0]
    msg = received.message
    assert received.rcpt_tos == ["ada@example.com"]
    assert msg["From"] == "Acme Recruiting <jobs@acme.example>"
    assert msg["To"] == "ada@example.com"
    assert msg["Reply-To"] == "talent@acme.example"
    assert msg["Subject"] == "Ada, your interview for Analyst at Acme"
    assert abs(parsedate_to_datetime(msg["Date"]) - now()) < timedelta(minutes=1)
    assert msg["Message-ID"].endswith("@jobs.example.test>")
    assert result.provider_id == msg["Message-ID"].strip("<>")
    unsubscribe = f"https://jobs.example.test/u/{c.token}"
    assert msg["List-Unsubscribe"].strip() == f"<{unsubscribe}>"  # long headers may be folded
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    link = f"https://jobs.example.test/i/{c.token}"
    assert link in text and unsubscribe in text
    assert f'href="{link}"' in html and "Start the interview" in html and unsubscribe in html
    assert "about 15 minutes" in text and "Rita Recruiter" in text
    # What was sent is kept on the message, with the variant used.
    assert m.subject == msg["Subject"] and m.variant == "A" and m.template_version_id is not None


def test_mailto_unsubscribe_is_added_when_configured(app, smtp, team_settings):
    app.config["MILO_UNSUBSCRIBE_MAILTO"] = "unsubscribe@acme.example"
    c = _candidate()
    send_message(db.session, _message(c), team_settings)
    header = smtp.wait_for(1)[0].message["List-Unsubscribe"].strip()
    assert header.startswith(f"<https://jobs.example.test/u/{c.token}>, <mailto:unsubscribe@acme.example?subject=")


def test_a_refused_connection_is_a_temporary_failure(app, team_settings):
    use_smtp(app, free_port())
    result = send_message(db.session, _message(_candidate()), team_settings)
    assert result.status == channels.TEMPORARY and "refused" in result.error


def test_a_server_that_never_answers_is_a_temporary_failure_within_the_timeout(app, team_settings):
    silent = SilentServer().start()
    try:
        use_smtp(app, silent.port, timeout=1)
        started = time.monotonic()
        result = send_message(db.session, _message(_candidate()), team_settings)
        elapsed = time.monotonic() - started
    finally:
        silent.stop()
    assert result.status == channels.TEMPORARY and "did not answer in time" in result.error
    assert elapsed < 5


def test_a_rejected_recipient_is_permanent_and_a_deferral_temporary(app, smtp, team_settings):
    smtp.reject["ada@example.com"] = "550 5.1.1 No such user"
    result = send_message(db.session, _message(_candidate()), team_settings)
    assert result.status == channels.PERMANENT and "550" in result.error
    smtp.reject["ada@example.com"] = "451 4.7.1 Try again later"
    result = send_message(db.session, _message(_candidate_second()), team_settings)
    assert result.status == channels.TEMPORARY and "451" in result.error


def _candidate_second():
    agent = make_agent("Second")
    c = Candidate(agent_id=agent.id, name="Bea", email="ada@example.com", timezone="UTC",
                  deadline_at=now() + timedelta(days=1), channel="email")
    db.session.add(c)
    db.session.commit()
    return c


def test_one_smtp_connection_serves_a_batch(app, smtp, team_settings):
    c = _candidate()
    other = _candidate_second()
    with channels.smtp_connection() as conn:
        for cand in (c, other):
            assert send_message(db.session, _message(cand), team_settings, smtp=conn).ok
    assert len(smtp.wait_for(2)) == 2


def test_no_sender_address_is_a_clear_temporary_failure(app, smtp):
    from milo_portal.settings.services import get_settings

    app.config["MAIL_DEFAULT_SENDER"] = None
    result = send_message(db.session, _message(_candidate()), get_settings(db.session))
    assert result.status == channels.TEMPORARY and "sender address" in result.error


# --- Twilio -------------------------------------------------------------------------------

@pytest.fixture()
def twilio(app):
    fake = FakeTwilio().start()
    app.config.update(MILO_SMS_BACKEND="twilio", TWILIO_ACCOUNT_SID="AC" + "1" * 32, TWILIO_AUTH_TOKEN="secret-token",
                      TWILIO_FROM_NUMBER="+14155550000", TWILIO_WHATSAPP_FROM="+14155550001",
                      TWILIO_API_BASE_URL=fake.url, MILO_TWILIO_TIMEOUT=5)
    yield fake
    fake.stop()


def test_sms_goes_out_through_the_messages_api(app, twilio, team_settings):
    c = _candidate(channel="sms")
    result = send_message(db.session, _message(c), team_settings)
    assert result.ok and result.provider_id.startswith("SM")
    request = twilio.requests[0]
    assert request["path"] == f"/2010-04-01/Accounts/AC{'1' * 32}/Messages.json"
    form = request["form"]
    assert form["To"] == "+14155550100" and form["From"] == "+14155550000"
    assert form["StatusCallback"] == "https://jobs.example.test/hooks/twilio/status"
    assert f"https://jobs.example.test/i/{c.token}" in form["Body"]
    assert "Rita Recruiter from Acme" in form["Body"]  # signed: texts from unknown numbers are distrusted
    assert request["auth"].startswith("Basic ")


def test_whatsapp_uses_the_whatsapp_addresses(app, twilio, team_settings):
    c = _candidate(channel="whatsapp")
    assert send_message(db.session, _message(c), team_settings).ok
    form = twilio.requests[0]["form"]
    assert form["To"] == "whatsapp:+14155550100" and form["From"] == "whatsapp:+14155550001"


def test_an_invalid_number_is_permanent_and_a_server_error_temporary(app, twilio, team_settings):
    twilio.fail_with = (400, {"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400})
    result = send_message(db.session, _message(_candidate(channel="sms")), team_settings)
    assert result.status == channels.PERMANENT and "21211" in result.error
    twilio.fail_with = (503, {"code": 20503, "message": "Service unavailable", "status": 503})
    result = send_message(db.session, _message(_candidate_sms_second()), team_settings)
    assert result.status == channels.TEMPORARY


def _candidate_sms_second():
    agent = make_agent("Third")
    c = Candidate(agent_id=agent.id, name="Cy", phone="+14155550199", timezone="UTC", channel="sms",
                  deadline_at=now() + timedelta(days=1))
    db.session.add(c)
    db.session.commit()
    return c


def test_twilio_unreachable_is_temporary(app, team_settings):
    app.config.update(MILO_SMS_BACKEND="twilio", TWILIO_ACCOUNT_SID="AC" + "1" * 32, TWILIO_AUTH_TOKEN="t",
                      TWILIO_FROM_NUMBER="+14155550000", TWILIO_API_BASE_URL=f"http://127.0.0.1:{free_port()}")
    result = send_message(db.session, _message(_candidate(channel="sms")), team_settings)
    assert result.status == channels.TEMPORARY and "could not be reached" in result.error


def test_console_backend_logs_instead_of_sending(app, team_settings, caplog):
    result = send_message(db.session, _message(_candidate(channel="sms")), team_settings)
    assert result.ok and result.provider_id.startswith("console-")
    assert "to +14155550100" in caplog.text
