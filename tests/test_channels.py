"""Sending through real servers on loopback: SMTP (aiosmtpd) and a Twilio-shaped HTTP API."""
from __future__ import annotations

import importlib
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
from tests.timing import finishes_within


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


def test_the_email_is_one_multipart_alternative_with_text_then_html(app, smtp, team_settings):
    """Defect: the e-mail was multipart/mixed around a single multipart/alternative (what
    Flask-Mail builds); it is now the alternative alone, plain text first, HTML last."""
    c = _candidate(name="Zoë Ångström")
    result = send_message(db.session, _message(c), team_settings)
    assert result.ok, result.error
    received = smtp.wait_for(1)[0]
    msg = received.message
    assert msg.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg["MIME-Version"] == "1.0"
    assert msg["Subject"].startswith("Zoë, your interview")
    assert received.data.count(b"Content-Type: multipart/") == 1


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


# --- deadlines, unknown outcomes, messages that cannot be built ------------------------------

def test_a_server_answering_one_byte_a_second_is_cut_at_the_send_deadline(app, team_settings):
    """Defect: the read timeout covered each read, not the whole send, so a mail server that
    trickles one byte a second held a send (and the dispatcher) for minutes."""
    from tests.servers import TricklingSmtpServer

    trickle = TricklingSmtpServer(interval=1.0).start()
    try:
        use_smtp(app, trickle.port, timeout=3)
        app.config["MILO_SEND_DEADLINE"] = 3
        message = _message(_candidate())
        result, _, elapsed = finishes_within(20, lambda: send_message(db.session, message, team_settings))
    finally:
        trickle.stop()
    assert result.status == channels.TEMPORARY and "did not finish within 3 s" in result.error
    assert elapsed < 3 + 2


def test_no_reply_after_the_whole_message_went_out_is_an_unknown_outcome(app, team_settings):
    """Defect: a timeout waiting for the final reply to DATA was a temporary failure, so the
    message was sent again although the server may already have accepted it."""
    from tests.servers import UnconfirmingSmtpSink

    sink = UnconfirmingSmtpSink().start()
    try:
        use_smtp(app, sink.port, timeout=1)
        result = send_message(db.session, _message(_candidate()), team_settings)
    finally:
        sink.stop()
    assert len(sink.messages) == 1  # the server has the message...
    assert result.status == channels.UNKNOWN  # ...so it is not "surely failed"
    assert "did not confirm it" in result.error and "may or may not" in result.error


def test_a_server_that_is_cut_off_before_the_data_ends_is_a_plain_temporary_failure(app, team_settings):
    """A timeout before the end of the message went out: the server cannot have accepted it."""
    silent = SilentServer().start()
    try:
        use_smtp(app, silent.port, timeout=5)
        app.config["MILO_SEND_DEADLINE"] = 1
        result, _, elapsed = finishes_within(15, lambda: send_message(db.session, _message(_candidate()), team_settings))
    finally:
        silent.stop()
    assert result.status == channels.TEMPORARY and "within 1 s" in result.error
    assert elapsed < 1 + 2


def test_the_batch_connection_reconnects_after_a_failed_send(app, smtp, team_settings):
    c, other = _candidate(), _candidate_second()
    smtp.reject["ada@example.com"] = "550 5.1.1 No such user"
    with channels.smtp_connection() as conn:
        assert send_message(db.session, _message(c), team_settings, smtp=conn).status == channels.PERMANENT
        assert conn.host is None  # closed after the failure
        del smtp.reject["ada@example.com"]
        assert send_message(db.session, _message(other), team_settings, smtp=conn).ok
    assert len(smtp.wait_for(1)) == 1


@pytest.mark.parametrize("field,value", [
    ("name", "Ada\r\nBcc: victim@example.com"),
    ("name", "Ada\nLovelace"),
])
def test_a_line_break_stored_in_a_name_reaches_no_header(app, smtp, team_settings, field, value):
    """Defect: a line break in a candidate's name (stored before input was cleaned) made the
    subject a bad header: Flask-Mail raised BadHeaderError instead of sending."""
    c = _candidate(**{field: value})
    team_settings.sender_name = "Acme\nRecruiting"
    db.session.commit()
    result = send_message(db.session, _message(c), team_settings)
    assert result.ok, result.error
    msg = smtp.wait_for(1)[0].message
    assert "\n" not in msg["Subject"] and msg["Subject"].startswith("Ada, your interview")
    assert msg["From"] == "Acme Recruiting <jobs@acme.example>" and msg["Bcc"] is None


def test_an_address_with_a_line_break_cannot_be_built_and_fails_for_good(app, smtp, team_settings):
    c = _candidate(email="ada@example.com\r\nBcc: victim@example.com")
    result = send_message(db.session, _message(c), team_settings)
    assert result.status == channels.PERMANENT and "is not valid" in result.error
    time.sleep(0.2)
    assert smtp.messages == []


def test_a_twilio_request_past_the_send_deadline_is_an_unknown_outcome(app, twilio, team_settings):
    """Defect: a send to Twilio was bounded by the read timeout only (per read, and a retry after
    a read timeout could send the text twice)."""
    importlib.import_module("twilio.rest")  # loaded before the clock starts: a first import is slow on a busy machine

    twilio.delay = 4
    app.config.update(MILO_TWILIO_TIMEOUT=10, MILO_SEND_DEADLINE=1)
    message = _message(_candidate(channel="sms"))
    result, _, elapsed = finishes_within(15, lambda: send_message(db.session, message, team_settings))
    assert result.status == channels.UNKNOWN and "within 1 s" in result.error
    assert elapsed < 1 + 2 and len(twilio.requests) == 1


def test_a_twilio_read_timeout_is_an_unknown_outcome(app, twilio, team_settings):
    """Twilio got the request and did not answer in time: it may have queued the text."""
    twilio.delay = 3
    app.config.update(MILO_TWILIO_TIMEOUT=1, MILO_SEND_DEADLINE=30)
    result = send_message(db.session, _message(_candidate(channel="sms")), team_settings)
    assert result.status == channels.UNKNOWN and "did not answer in time" in result.error


@pytest.fixture(scope="module")
def tls_server_context(tmp_path_factory):
    """A TLS context with a throwaway self-signed certificate for 127.0.0.1."""
    import ssl
    import subprocess

    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


@pytest.mark.parametrize("mode", ["starttls", "smtps"])
def test_mail_goes_over_tls_on_deadline_bound_sockets(app, team_settings, tls_server_context, mode):
    from tests.servers import SmtpSink

    options = ({"tls_context": tls_server_context, "require_starttls": True} if mode == "starttls"
               else {"ssl_context": tls_server_context})
    sink = SmtpSink(**options).start()
    try:
        use_smtp(app, sink.port)
        state = app.extensions["mail"]
        state.use_tls, state.use_ssl = mode == "starttls", mode == "smtps"
        with channels.smtp_connection() as conn:
            assert send_message(db.session, _message(_candidate()), team_settings, smtp=conn).ok
            # Once encrypted, every read and write still stops at the send deadline.
            assert isinstance(conn.host.sock, channels._DeadlineSSLSocket)
        assert sink.wait_for(1)[0].rcpt_tos == ["ada@example.com"]
    finally:
        sink.stop()
