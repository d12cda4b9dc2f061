"""Settings, the template editor and the agent page in Chromium: time pickers, one marker
per checklist line, the plain-text version below the preview, one primary button per screen."""
from __future__ import annotations

import pytest

from milo_portal.extensions import db
from tests.browser.conftest import login
from tests.conftest import PASSWORD, make_agent, make_user

pytestmark = pytest.mark.browser

# Pico's primary buttons: a button (or role=button) with none of the lesser styles.
PRIMARY = """() => [...document.querySelectorAll('main button, main [role=button], main input[type=submit]')]
  .filter(b => b.offsetParent !== null && !b.closest('details:not([open]) > :not(summary)'))
  .filter(b => !['secondary', 'outline', 'contrast'].some(c => b.classList.contains(c)))
  .filter(b => !b.closest('.variables') && b.type !== 'checkbox')
  .map(b => b.textContent.trim())"""


def test_settings_shows_two_time_pickers_country_names_and_one_marker_per_check(live_server, page):
    """Defects: the set-up checklist showed a bullet and a ✗ on each line; the countries were codes."""
    make_user("rita@example.com", "Rita Recruiter")
    db.session.remove()
    login(page, live_server, "rita@example.com", PASSWORD)
    page.goto(live_server.url("/settings"))
    assert page.locator("#t-window_start").get_attribute("type") == "time"
    assert page.locator("#t-window_end").get_attribute("type") == "time"
    assert page.locator("#default_country option[value=DE]").inner_text() == "Germany (DE)"
    item = page.locator(".setup-checklist .checks li").first
    assert item.evaluate("e => getComputedStyle(e).listStyleType") == "none"
    assert item.evaluate("e => getComputedStyle(e, '::marker').content") in ("none", "normal", "")
    assert page.evaluate(PRIMARY) == ["Save settings"]


def test_the_fields_of_each_settings_row_line_up(live_server, page):
    """Defect: in the follow-up rules, "Most follow-ups per candidate" has a one-line label and
    its neighbours two-line ones, so its box sat higher than theirs."""
    make_user("rita@example.com", "Rita Recruiter")
    db.session.remove()
    login(page, live_server, "rita@example.com", PASSWORD)
    page.set_viewport_size({"width": 1366, "height": 900})
    agent_id = make_agent().id
    db.session.remove()
    for url in ("/settings", f"/agents/{agent_id}/edit"):
        page.goto(live_server.url(url))
        page.evaluate("() => document.querySelectorAll('details').forEach(d => d.open = true)")
        rows = page.evaluate("""() => [...document.querySelectorAll('main form .grid')].map(g =>
            [...g.querySelectorAll(':scope > * input:not([type=hidden]), :scope > * select')]
                .map(e => Math.round(e.getBoundingClientRect().top)))""")
        assert rows and all(len(set(tops)) <= 1 for tops in rows), (url, rows)


def test_the_plain_text_version_sits_below_the_email_preview(live_server, page):
    """Defect: the template editor's "Plain-text version" link overlapped the preview."""
    make_user("rita@example.com", "Rita Recruiter")
    db.session.remove()
    login(page, live_server, "rita@example.com", PASSWORD)
    for width in (1366, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(live_server.url("/templates/invite/email/A"))
        frame = page.locator("iframe.email-frame").bounding_box()
        summary = page.get_by_text("Plain-text version").bounding_box()
        assert summary["y"] >= frame["y"] + frame["height"], width
        assert page.evaluate(PRIMARY) == ["Save variant A"]


def test_each_admin_screen_has_one_primary_button(live_server, page):
    """Defect: the agent page had three primary buttons (Share, Add Candidates, Add question)."""
    make_user("rita@example.com", "Rita Recruiter")
    agent = make_agent("Picker")
    agent_id = agent.id
    db.session.remove()
    login(page, live_server, "rita@example.com", PASSWORD)
    for path, primary in ((f"/agents/{agent_id}", ["Share"]), ("/agents", ["New interview agent"]),
                          ("/candidates", ["Add Candidates"]), ("/team", ["Add teammate"])):
        page.goto(live_server.url(path))
        assert page.evaluate(PRIMARY) == primary, path
