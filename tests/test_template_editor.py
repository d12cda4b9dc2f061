"""The template editor over HTTP: defaults, saving, refusing, preview, variants, history, tests."""
from __future__ import annotations

import pytest

from milo_portal.extensions import db
from milo_portal.messaging import services
from milo_portal.models import Template, TemplateVersion
from tests.timing import finishes_within

URL = "/templates/invite/email/A"


def test_every_kind_and_channel_has_a_default(auth, client):
    body = client.get("/templates").get_data(as_text=True)
    assert db.session.query(Template).count() == 12
    for label in ("Invite", "Reminder", "Nudge", "Final nudge", "E-mail", "SMS", "WhatsApp"):
        assert label in body


def test_default_sms_is_signed_and_personal(auth, client):
    client.get("/templates")
    for kind in ("invite", "reminder", "nudge", "final_nudge"):
        version = services.current_version(db.session, db.session.query(Template).filter_by(kind=kind, channel="sms").one())
        assert "{{ recruiter_name }}" in version.body and "{{ company }}" in version.body
        assert "{{ candidate.first_name }}" in version.body and "{{ link }}" in version.body


def test_defaults_say_what_the_guide_asks(auth, client):
    client.get("/templates")
    invite = services.current_version(db.session, db.session.query(Template).filter_by(kind="invite", channel="email").one())
    for phrase in ("interactive interview", "{{ duration }}", "phone", "{{ deadline }}", "{{ support_contact }}",
                   "whenever it suits you", "get to know you"):
        assert phrase in invite.body


def test_saving_makes_a_new_version_and_keeps_the_old(auth, client):
    client.get(URL)
    r = client.post(URL, {"subject": "Hello {{ candidate.first_name }}", "body": "Go: {{ link }}"})
    assert r.status_code == 302
    template = db.session.query(Template).filter_by(kind="invite", channel="email", variant="A").one()
    assert [v.number for v in template.versions] == [1, 2]
    assert services.current_version(db.session, template).subject == "Hello {{ candidate.first_name }}"


@pytest.mark.parametrize("subject,body,field,message", [
    ("Hi", "{{ ''.__class__.__mro__ }}", "body", "may not use"),
    ("Hi", "{{ candidate.nme }}", "body", "Unknown variable part"),
    ("Hi", "{% for %}", "body", "Line 1"),
    ("Hi {{ nope }}", "ok", "subject", "Unknown variable"),
    ("", "ok", "subject", "needs a subject"),
])
def test_a_broken_template_is_refused_next_to_the_field_and_not_saved(auth, client, subject, body, field, message):
    client.get(URL)
    r = client.post(URL, {"subject": subject, "body": body})
    text = r.get_data(as_text=True)
    assert r.status_code == 422
    assert f'id="{field}-error"' in text and message in text.replace("&#34;", '"')
    assert db.session.query(TemplateVersion).filter_by(template_id=1).count() == 1


def test_preview_renders_the_draft_for_a_sample_candidate(auth, client):
    client.get(URL)
    r = client.htmx_post(URL + "/preview", {"subject": "Hi {{ candidate.first_name }}", "body": "Role: {{ role }}"})
    body = r.get_data(as_text=True)
    assert "Hi Alex" in body and "Role: Customer support specialist" in body and "<iframe" in body
    frame_url = body.split('src="')[1].split('"')[0].replace("&amp;", "&")
    frame = client.get(frame_url)
    assert frame.mimetype == "text/html" and "Role: Customer support specialist" in frame.get_data(as_text=True)
    assert "sandbox" in frame.headers["Content-Security-Policy"]
    assert "script" not in frame.headers["Content-Security-Policy"].replace("default-src 'none'", "")


def test_preview_frame_refuses_a_tampered_draft(auth, client):
    assert client.get("/templates/preview-frame?d=forged").status_code == 404


def test_preview_shows_errors_instead_of_output(auth, client):
    client.get(URL)
    body = client.htmx_post(URL + "/preview", {"subject": "x", "body": "{{ oops }}"}).get_data(as_text=True)
    assert 'id="preview-error"' in body and "Unknown variable" in body


def test_sms_preview_counts_characters_encoding_and_segments(auth, client):
    client.get("/templates")
    body = client.htmx_post("/templates/reminder/sms/A/preview", {"body": "a" * 161}).get_data(as_text=True)
    assert "<strong>161</strong> characters · GSM-7" in body and "<strong>2</strong> segments" in body
    body = client.htmx_post("/templates/reminder/sms/A/preview", {"body": "Hi 🙂"}).get_data(as_text=True)
    assert "UCS-2" in body and "<strong>1</strong> segment" in body


def test_variants_can_be_added_weighted_and_switched_off(auth, client):
    client.get(URL)
    r = client.post("/templates/invite/email/variants")
    assert r.headers["Location"].endswith("/templates/invite/email/B")
    client.post("/templates/invite/email/B", {"subject": "Other subject", "body": "B body {{ link }}"})
    client.post("/templates/invite/email/B/options", {"weight": "3", "active": "y"})
    b = db.session.query(Template).filter_by(kind="invite", channel="email", variant="B").one()
    assert (b.weight, b.active) == (3, True)
    # A can be switched off while B is in use; the last variant in use cannot.
    client.post("/templates/invite/email/A/options", {"weight": "1"})  # active unchecked
    a = db.session.query(Template).filter_by(kind="invite", channel="email", variant="A").one()
    assert a.active is False
    client.post("/templates/invite/email/B/options", {"weight": "1"})
    db.session.refresh(b)
    assert b.active is True  # refused: one variant must stay active


def test_choose_version_follows_the_weights(app, auth, client):
    import random

    client.get(URL)
    client.post("/templates/invite/email/variants")
    client.post("/templates/invite/email/B/options", {"weight": "3", "active": "y"})
    rng = random.Random(4)
    picks = [services.choose_version(db.session, "invite", "email", rng).template.variant for _ in range(400)]
    assert 0.65 < picks.count("B") / 400 < 0.85


def test_restore_brings_back_an_old_version_as_a_new_one(auth, client):
    client.get(URL)
    client.post(URL, {"subject": "Second", "body": "Second {{ link }}"})
    first = db.session.query(TemplateVersion).filter_by(template_id=1, number=1).one()
    client.post(f"{URL}/restore/{first.id}")
    versions = db.session.query(TemplateVersion).filter_by(template_id=1).order_by(TemplateVersion.number).all()
    assert [v.number for v in versions] == [1, 2, 3] and versions[2].body == versions[0].body


def test_send_test_to_me_arrives(auth, client, smtp, team_settings, user):
    client.get(URL)
    client.post(URL, {"subject": "Hello {{ candidate.first_name }}", "body": "Body {{ link }}"})
    r = client.post(URL + "/test", {"to": user.email})
    assert "Test sent" in client.get(r.headers["Location"]).get_data(as_text=True)
    msg = smtp.wait_for(1)[0].message
    assert msg["Subject"] == "[Test] Hello Alex" and msg["To"] == user.email


def test_send_test_reports_a_failure_plainly(auth, client, team_settings, user):
    client.get(URL)
    r = client.post(URL + "/test", {"to": user.email})
    assert "Test not sent: The mail server refused the connection" in client.get(r.headers["Location"]).get_data(as_text=True)


def test_unknown_template_is_404(auth, client):
    assert client.get("/templates/invite/fax/A").status_code == 404
    assert client.get("/templates/welcome/email/A").status_code == 404
    assert client.get("/templates/invite/email/Z").status_code == 404


def test_settings_page_saves_identity_and_shows_channels_without_secrets(app, auth, client):
    app.config["TWILIO_AUTH_TOKEN"] = "very-secret-token"
    body = client.get("/settings").get_data(as_text=True)
    assert "E-mail" in body and "SMS" in body and "WhatsApp" in body and "very-secret-token" not in body
    r = client.post("/settings", {"company_name": "Acme", "sender_name": "Acme Jobs", "sender_email": "jobs@acme.example",
                                  "reply_to": "", "support_email": "help@acme.example", "support_phone": "+1 415 555 0100",
                                  "default_country": "GB", "default_timezone": "Europe/London", "open_tracking": "y"})
    assert r.status_code == 302
    from milo_portal.settings.services import get_settings

    s = get_settings(db.session)
    assert (s.sender_email, s.default_country, s.open_tracking) == ("jobs@acme.example", "GB", True)


def test_settings_refuses_a_bad_phone_and_address(auth, client):
    r = client.post("/settings", {"company_name": "Acme", "sender_email": "nope", "support_phone": "12",
                                  "default_country": "US", "default_timezone": "UTC"})
    body = r.get_data(as_text=True)
    assert r.status_code == 422 and 'id="sender_email-error"' in body and 'id="support_phone-error"' in body


def test_settings_send_a_test_per_channel(auth, client, smtp, team_settings, user, caplog):
    r = client.post("/settings/test/email", {"to": ""})
    assert "Test sent to rita@example.com" in client.get(r.headers["Location"]).get_data(as_text=True)
    assert smtp.wait_for(1)[0].message["Subject"].startswith("[Test]")
    r = client.post("/settings/test/sms", {"to": "+1 415 555 0111"})
    assert "Test sent to +14155550111" in client.get(r.headers["Location"]).get_data(as_text=True)


# --- bounded previews and length warnings ----------------------------------------------------

@pytest.mark.parametrize("body,message", [
    ("{{ (3 ** (2 ** 28)) % 7 }}", "number too large"),
    ("{{ 'x' * 10**8 }}", "repeats text"),
    ("{% for i in range(1000) %}{% for j in range(1000) %}{% for k in range(1000) %}{% endfor %}{% endfor %}{% endfor %}",
     "too much work"),
])
def test_a_preview_of_a_runaway_template_is_refused_promptly(auth, client, body, message):
    """Defect: `{{ (3 ** (2 ** 28)) % 7 }}` in a preview froze a gunicorn worker until its 60 s
    timeout; a huge repeat and nested ranges ran to the end."""
    client.get(URL)
    r, _, _ = finishes_within(30, lambda: client.htmx_post(URL + "/preview", {"subject": "Hi", "body": body}))
    text = r.get_data(as_text=True)
    assert r.status_code == 422 and 'id="preview-error"' in text and message in text
    r = client.post(URL, {"subject": "Hi", "body": body})  # and it cannot be saved
    assert r.status_code == 422 and message in r.get_data(as_text=True)


def test_the_editor_warns_next_to_the_field_when_the_longest_values_make_a_subject_too_long(auth, client):
    client.get(URL)
    page = client.get(URL).get_data(as_text=True)
    # The shipped subject names the role and the company: 200 characters each at most.
    warning = page.split('id="subject-warning"')[1].split("</small>")[0]
    assert "200-character role title" in warning and "shortened to 200" in warning
    r = client.htmx_post(URL + "/preview", {"subject": "Your interview", "body": "Hi {{ candidate.first_name }}"})
    text = r.get_data(as_text=True)
    assert r.status_code == 200
    assert '<small class="field-warning" id="subject-warning" role="status" hx-swap-oob="true"></small>' in text
    r = client.htmx_post(URL + "/preview", {"subject": "{{ role }} at {{ company }}", "body": "Hi"})
    oob = r.get_data(as_text=True).split('id="subject-warning"')[1].split("</small>")[0]
    assert 'hx-swap-oob="true"' in oob and "reaches 404 characters" in oob


def test_the_editor_warns_when_a_text_can_pass_its_limit(auth, client):
    client.get("/templates")
    body = " ".join(["{{ role }} at {{ company }}."] * 4)
    text = client.htmx_post("/templates/invite/sms/A/preview", {"body": body}).get_data(as_text=True)
    warning = text.split('id="body-warning"')[1].split("</small>")[0]
    assert "over the limit of 1,600" in warning and "would fail to send" in warning
    r = client.post("/templates/invite/sms/A", {"body": body})
    assert r.status_code == 302  # a warning, not an error: the sample candidate's text is short
