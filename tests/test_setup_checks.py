"""The set-up checklist says exactly what is missing before a message fails, and a
channel is "configured" only when a test send would work."""
from __future__ import annotations

from datetime import timedelta

from milo_portal.clock import now
from milo_portal.extensions import db
from milo_portal.models import Candidate, Message
from milo_portal.settings import checks
from tests.conftest import make_agent, use_smtp
from tests.servers import SilentServer, free_port


def _page(client, url):
    return " ".join(client.get(url).get_data(as_text=True).split())


def test_a_new_installation_is_told_what_is_missing(app, auth, client):
    """Defect: with the defaults Settings said "E-mail — configured" while every invite failed
    with "No sender address", and SMS said "configured" on the console backend."""
    use_smtp(app, free_port())  # nothing listens there
    app.config["MILO_PUBLIC_BASE_URL"] = "http://127.0.0.1:5000"
    make_agent("Courier", default_channel="sms")
    page = _page(client, "/settings?refresh=1")
    assert "✗ Sender address" in page and "✗ Mail server" in page and "refused the connection" in page
    assert "✗ Links candidates can open" in page and "✗ SMS and WhatsApp" in page
    assert "E-mail</strong> — configured" not in page and "SMS</strong> — configured" not in page
    fragment = _page(client, "/settings/checklist?compact=1")
    assert "Before the first message goes out" in fragment
    assert 'hx-get="/settings/checklist?compact=1"' in client.get("/agents").get_data(as_text=True)


def test_the_checklist_is_done_when_a_test_send_would_work(app, auth, client, smtp, team_settings):
    app.config["MILO_PUBLIC_BASE_URL"] = "https://jobs.example.test"
    page = _page(client, "/settings?refresh=1")
    assert "✓ Sender address" in page and "✓ Mail server" in page and "✓ Links candidates can open" in page
    assert "E-mail</strong> — configured" in page
    assert client.get("/settings/checklist?compact=1").get_data(as_text=True) == ""


def test_a_mail_server_that_never_answers_is_reported_within_the_timeout(app):
    silent = SilentServer().start()
    try:
        config = dict(app.config, MAIL_SERVER="127.0.0.1", MAIL_PORT=silent.port, MILO_SMTP_TIMEOUT=1)
        assert "did not answer" in checks.probe_smtp(config)
    finally:
        silent.stop()


def test_the_outbox_and_the_agent_page_show_a_banner_when_messages_fail(auth, client):
    agent = make_agent()
    c = Candidate(agent_id=agent.id, name="Ada", email="ada@example.com", deadline_at=now() + timedelta(days=3))
    db.session.add(c)
    db.session.flush()
    db.session.add(Message(candidate_id=c.id, kind="invite", step=1, channel="email", status="failed",
                           scheduled_for=now() - timedelta(minutes=5), last_error="SMTP 550: mailbox unavailable"))
    db.session.commit()
    for url in ("/outbox", f"/agents/{agent.id}"):
        page = _page(client, url)
        assert "Messages are failing:" in page and "1 failed in the last day" in page
        assert "SMTP 550: mailbox unavailable" in page
    other = make_agent("Other")
    assert "Messages are failing" not in _page(client, f"/agents/{other.id}")


def test_saving_settings_with_the_optional_addresses_left_empty_lets_e_mail_go(app, auth, client, smtp):
    """Defect: Settings → Messaging saved an empty reply-to as '' and every e-mail from then on
    failed for good with "The address '' is not valid"."""
    from milo_portal.followups.services import dispatch
    from milo_portal.settings.services import get_settings

    response = client.post("/settings", {
        "company_name": "Acme", "sender_name": "Acme Recruiting",
        "sender_email": "jobs@acme.example", "reply_to": "", "support_email": "", "support_phone": "",
        "default_country": "US", "default_timezone": "UTC"})
    assert response.status_code == 302
    settings = get_settings(db.session)
    assert (settings.reply_to, settings.support_email, settings.support_phone) == (None, None, None)
    agent = make_agent()
    c = Candidate(agent_id=agent.id, name="Ada", email="ada@example.com", deadline_at=now() + timedelta(days=3))
    db.session.add(c)
    db.session.flush()
    db.session.add(Message(candidate_id=c.id, kind="invite", step=1, channel="email", status="scheduled",
                           scheduled_for=now(), immediate=True))
    db.session.commit()
    assert dispatch(db.session, now()).sent
    received = smtp.wait_for(1)
    assert "Reply-To" not in received[0].message


def test_an_unusable_sender_address_is_refused_with_its_reason_at_the_top_of_the_form(auth, client):
    """Defect: a sender under a reserved name (``.test``) got only "Invalid email address."
    under its field, out of sight, while the page scrolled to the checklist; "Send a test"
    then gave the reason."""
    from milo_portal.settings.services import get_settings

    response = client.post("/settings", {
        "company_name": "Acme", "sender_name": "", "sender_email": "jobs@trial.test", "reply_to": "",
        "support_email": "", "support_phone": "", "default_country": "US", "default_timezone": "UTC"})
    body = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "Not saved: 1 field below needs a change." in body
    assert "Not a usable e-mail address:" in body and "special-use or reserved name" in body
    assert 'action="/settings#messaging"' in body
    assert get_settings(db.session).sender_email != "jobs@trial.test"


def test_an_empty_reply_to_stored_earlier_is_no_reply_to(app, smtp, team_settings):
    """A row saved before with reply_to '' still sends (no Reply-To header), it never fails."""
    from milo_portal.messaging.channels import Email, prepare_email

    built = prepare_email(Email(to="ada@example.com", sender=("Acme", "jobs@acme.example"), reply_to="",
                                subject="Hello", text="Hi", html="<p>Hi</p>", message_id_domain="acme.example"))
    assert b"Reply-To" not in built.data
