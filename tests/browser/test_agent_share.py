"""A recruiter logs in, builds an agent, reorders questions and copies the share link
from a plain-http intranet host name (no Clipboard API there)."""
from __future__ import annotations

import pytest

from milo_portal.extensions import db
from milo_portal.models import Agent
from tests.browser.conftest import login
from tests.conftest import PASSWORD, make_user

pytestmark = pytest.mark.browser


def test_it_creates_an_agent_reorders_questions_and_copies_the_share_link(live_server, page):
    make_user("rita@example.com", "Rita Recruiter")
    db.session.remove()

    login(page, live_server, "rita@example.com", PASSWORD)
    page.get_by_role("button", name="New interview agent").click()
    page.get_by_label("Role title").fill("Night shift picker")
    page.get_by_label("Company name shown to candidates").fill("Acme Logistics")
    page.get_by_label("Role level").select_option("entry")
    # The channel suggestion follows the role level until the recruiter picks one.
    assert page.get_by_label("Default channel").input_value() == "sms"
    page.get_by_role("button", name="Create interview agent").click()
    page.wait_for_url("**/agents/*")

    # An empty question is refused next to the field (a 422 that htmx must still show).
    page.get_by_role("button", name="Add question").click()
    page.get_by_text("Write the question first.").wait_for()

    for text in ("First question?", "Second question?", "Third question?"):
        page.get_by_label("New question").fill(text)
        page.get_by_role("button", name="Add question").click()
        page.locator(".question-text", has_text=text).wait_for()

    # Reorder inline: move the third up twice.
    page.get_by_role("button", name="Move question 3 up").click()
    page.locator(".question-text").nth(1).filter(has_text="Third question?").wait_for()
    page.get_by_role("button", name="Move question 2 up").click()
    page.locator(".question-text").nth(0).filter(has_text="Third question?").wait_for()
    assert page.locator(".question-text").all_inner_texts() == [
        "Third question?", "First question?", "Second question?"]

    page.get_by_role("button", name="Share", exact=True).click()
    page.locator("#share-link").wait_for()
    url_before = page.url
    agent = db.session.query(Agent).one()
    expected = f"{live_server.url()}/s/{agent.share_token}"
    db.session.remove()
    assert page.locator("#share-link").input_value() == expected
    assert page.url == url_before  # opened in place by htmx, no page load

    assert page.evaluate("window.isSecureContext") is False
    assert page.evaluate("typeof navigator.clipboard") == "undefined"
    page.get_by_role("button", name="Copy link").first.click()
    page.get_by_role("button", name="Copied").wait_for()
    feedback = page.locator('[data-copy-feedback-for="share-link"]').inner_text()
    assert "Copied" in feedback
    selected = page.evaluate("document.getSelection().toString() || (document.activeElement.value || '').substring("
                             "document.activeElement.selectionStart, document.activeElement.selectionEnd)")
    assert selected == expected

    # The clipboard itself holds the exact link: read it from a secure origin (loopback).
    reader = page.context.new_page()
    reader.goto(live_server.url("/login", host="127.0.0.1"))
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url("", host="127.0.0.1"))
    assert reader.evaluate("navigator.clipboard.readText()") == expected

    # Tag a source and copy that link the same way.
    page.get_by_label("Source").fill("LinkedIn")
    page.locator("#tagged-share-link").wait_for()
    assert page.locator("#tagged-share-link").input_value() == expected + "?src=linkedin"
