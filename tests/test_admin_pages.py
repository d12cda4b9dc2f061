"""Small things a new team hit on the admin pages: the favicon, country names, the outbox's
failing banner, and CSRF still refused without the hand-written checks."""
from __future__ import annotations

from datetime import timedelta

from milo_portal.clock import now
from milo_portal.extensions import db
from milo_portal.models import Candidate, Message, MessageStatus
from tests.conftest import make_agent


def test_the_favicon_is_our_own_and_served_without_login(app, client):
    """Defect: /favicon.ico was a 404 on every page."""
    response = client.get("/favicon.ico")
    assert response.status_code == 200 and response.mimetype == "image/svg+xml"
    assert b"<svg" in response.data


def test_admin_pages_link_the_icon(auth, client):
    html = client.get("/agents").get_data(as_text=True)
    assert 'rel="icon"' in html and "favicon.svg" in html


def test_settings_names_each_country_with_its_code(auth, client):
    """Defect: the default country list showed codes only ("DE")."""
    html = client.get("/settings").get_data(as_text=True)
    assert '<option value="DE">Germany (DE)</option>' in html
    assert '<option selected value="US">United States (US)</option>' in html or \
        '<option value="US" selected>United States (US)</option>' in html


def _failing(status: str) -> None:
    agent = make_agent("Picker")
    c = Candidate(agent_id=agent.id, name="Ada", email="ada@example.com", timezone="UTC",
                  deadline_at=now() + timedelta(days=3))
    db.session.add(c)
    db.session.flush()
    db.session.add(Message(candidate_id=c.id, kind="invite", step=1, channel="email", status=status,
                           scheduled_for=now(), attempts=1, last_error="550 5.1.1 No such user"))
    db.session.commit()


def test_the_failing_banner_on_the_outbox_never_links_to_the_page_shown(auth, client):
    """Defect: on the Outbox page the "messages are failing" banner linked to that same page."""
    _failing(MessageStatus.FAILED)
    html = client.get("/outbox?status=failed").get_data(as_text=True)
    banner = html.split('class="banner banner-error"')[1].split("</div>")[0]
    assert "Messages are failing" in banner and "<a " not in banner
    html = client.get("/outbox").get_data(as_text=True)  # the scheduled list: link to the failed ones
    banner = html.split('class="banner banner-error"')[1].split("</div>")[0]
    assert 'href="/outbox?status=failed"' in banner


def test_the_failing_banner_shows_the_newest_error_of_the_messages_it_counts(app):
    """Defect: the banner counts failures of the last day and retrying messages, but showed
    the error of the newest message that ever failed, counted or not (here, a failure of three
    days ago, added last). And with an agent it walked every message from the newest down."""
    from milo_portal.settings import checks

    agent = make_agent("Errors")
    c = Candidate(agent_id=agent.id, name="Ada", email="ada@example.com", timezone="UTC")
    db.session.add(c)
    db.session.flush()
    moment = now()
    for step, status, at, error in ((1, MessageStatus.SCHEDULED, moment, "Timed out: retrying"),
                                    (2, MessageStatus.FAILED, moment - timedelta(days=3), "550 Mailbox gone")):
        db.session.add(Message(candidate_id=c.id, kind="reminder", step=step, channel="email", status=status,
                               scheduled_for=at, attempts=1, last_error=error))
        db.session.flush()
    db.session.commit()
    for agent_id in (None, agent.id):
        assert checks.failing(db.session, moment, agent_id) == checks.Failing(0, 1, "Timed out: retrying")
    assert checks.failing(db.session, moment, agent.id + 1) == checks.Failing(0, 0, None)


def test_a_retrying_message_banner_on_the_scheduled_list_has_no_link_to_itself(auth, client):
    _failing(MessageStatus.SCHEDULED)
    html = client.get("/outbox").get_data(as_text=True)
    banner = html.split('class="banner banner-error"')[1].split("</div>")[0]
    assert "being retried" in banner and "<a " not in banner
