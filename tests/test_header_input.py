"""Names, titles and sender names end up in e-mail headers: a line break or another control
character typed (or pasted, or posted) into them is removed at the input."""
from __future__ import annotations

import pytest

from milo_portal.candidates.services import ContactData, clean_contact
from milo_portal.extensions import db
from milo_portal.headers import has_control_characters, one_line
from milo_portal.models import Agent, Candidate
from milo_portal.settings.services import get_settings
from tests.conftest import make_agent


@pytest.mark.parametrize("raw,expected", [
    ("Ada Lovelace", "Ada Lovelace"),
    ("  Ada\r\nLovelace ", "Ada Lovelace"),
    ("Ada\n\nBcc: x@evil.example", "Ada Bcc: x@evil.example"),
    ("Ada\tLovelace\x1b[31m", "Ada Lovelace [31m"),
    ("Ada\u2028Lovelace\x85", "Ada Lovelace"),
    ("Zoë  Ångström", "Zoë Ångström"),
    ("", ""),
    (None, ""),
])
def test_one_line(raw, expected):
    assert one_line(raw) == expected and not has_control_characters(one_line(raw))


def test_contact_names_are_put_on_one_line():
    contact = clean_contact(ContactData(name="Ada\r\nLovelace", email="ada@example.com"), "US", "UTC")
    assert contact.name == "Ada Lovelace"
    with pytest.raises(Exception, match="name"):  # nothing but control characters is no name
        clean_contact(ContactData(name="\r\n\t", email="ada@example.com"), "US", "UTC")


def test_a_line_break_typed_on_the_share_page_does_not_reach_the_name(client):
    """Defect: a line break in the name typed on the share page later crashed the dispatch run."""
    agent = make_agent()
    r = client.post(f"/s/{agent.share_token}", {"name": "Stranger\r\nBcc: x@evil.example", "email": "s@example.com",
                                                "phone": ""})
    assert r.status_code == 302
    assert db.session.query(Candidate).one().name == "Stranger Bcc: x@evil.example"


def test_a_line_break_in_an_agent_title_or_company_is_removed(auth, client, user):
    """Defect: a line break in an agent's title (edit form) reached e-mail subjects."""
    agent = make_agent()
    form = {"title": "Barista\r\nBcc: x@evil.example", "company": "Bean\nCo", "role_level": "entry",
            "description": "Coffee.\nLine two stays.", "duration_minutes": "10", "deadline_days": "5",
            "default_channel": "sms", "external_url": "", "owner_id": str(user.id)}
    assert client.post(f"/agents/{agent.id}/edit", form).status_code == 302
    agent = db.session.get(Agent, agent.id)
    db.session.refresh(agent)
    assert (agent.title, agent.company) == ("Barista Bcc: x@evil.example", "Bean Co")
    assert agent.description == "Coffee.\nLine two stays."  # not a header: left as typed


def test_a_line_break_in_the_sender_name_is_removed(auth, client):
    """Defect: a line break in the sender name (Settings) made the From header bad."""
    r = client.post("/settings", {"company_name": "Acme\r\n", "sender_name": "Acme\r\nRecruiting",
                                  "sender_email": "jobs@acme.example", "reply_to": "", "support_email": "",
                                  "support_phone": "", "default_country": "US", "default_timezone": "UTC"})
    assert r.status_code == 302
    settings = get_settings(db.session)
    db.session.refresh(settings)
    assert (settings.company_name, settings.sender_name) == ("Acme", "Acme Recruiting")
