"""A recruiter edits a template: the preview follows the typing, a variable goes in at the
cursor, variant B is saved, and a test reaches the SMTP server."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from milo_portal.extensions import db
from milo_portal.models import Template
from milo_portal.settings.services import get_settings
from tests.browser.conftest import login
from tests.conftest import PASSWORD, make_user, use_smtp
from tests.servers import SmtpSink

pytestmark = pytest.mark.browser


def test_edit_preview_insert_variable_save_variant_b_and_send_a_test(live_server, page):
    make_user("rita@example.com", "Rita Recruiter")
    settings = get_settings(db.session)
    settings.sender_email, settings.company_name = "jobs@acme.example", "Acme"
    db.session.commit()
    sink = SmtpSink().start()
    use_smtp(live_server.app, sink.port)
    try:
        login(page, live_server, "rita@example.com", PASSWORD)
        page.goto(live_server.url("/templates"))
        page.locator("a[href='/templates/reminder/sms/A']").click()
        body = page.get_by_role("textbox", name="Message")
        body.fill("Hi there")
        expect(page.locator("#preview-text")).to_have_text("Hi there")
        expect(page.locator("#sms-count")).to_contain_text("8 characters")
        # Insert a variable where the cursor is: between "Hi" and " there".
        body.focus()
        body.evaluate("el => el.setSelectionRange(2, 2)")
        page.get_by_role("button", name="candidate.first_name").click()
        expect(body).to_have_value("Hi{{ candidate.first_name }} there")
        expect(page.locator("#preview-text")).to_have_text("HiAlex there")
        body.fill("Hi {{ candidate.first_name }} 🙂")
        expect(page.locator("#sms-count")).to_contain_text("UCS-2")

        page.get_by_role("button", name="Add a variant").click()
        page.wait_for_url("**/templates/reminder/sms/B")
        page.get_by_role("textbox", name="Message").fill("Variant B for {{ candidate.first_name }}: {{ link }}")
        page.get_by_role("button", name="Save variant B").click()
        expect(page.locator(".flash-success")).to_contain_text("Saved as version 2 of variant B")
        template = db.session.query(Template).filter_by(kind="reminder", channel="sms", variant="B").one()
        assert template.versions[-1].body.startswith("Variant B for")
        db.session.remove()

        page.goto(live_server.url("/templates/invite/email/A"))
        page.get_by_label("Subject").fill("Your interview, {{ candidate.first_name }}")
        expect(page.locator("#preview-subject")).to_have_text("Your interview, Alex")
        page.get_by_role("button", name="Save variant A").click()
        page.get_by_label("Send to").fill("rita@example.com")
        page.get_by_role("button", name="Send test to me").click()
        expect(page.locator(".flash-success")).to_contain_text("Test sent to rita@example.com")
        message = sink.wait_for(1)[0].message
        assert message["Subject"] == "[Test] Your interview, Alex"
    finally:
        sink.stop()
