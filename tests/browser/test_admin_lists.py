"""The admin lists in Chromium: bulk actions keep the selection, the candidates list fits a
1366 px screen, and on a phone the nav folds away and the lists stack as cards."""
from __future__ import annotations

from datetime import timedelta

import pytest

from milo_portal.clock import now
from milo_portal.extensions import db
from milo_portal.models import Candidate, Message, MessageStatus
from tests.browser.conftest import login
from tests.conftest import PASSWORD, make_agent, make_user

pytestmark = pytest.mark.browser


def _people(n: int = 3, source: str = "ats") -> None:
    make_user("rita@example.com", "Rita Recruiter")
    agent = make_agent("Night shift picker with a rather long title for the column")
    moment = now()
    db.session.add_all([
        Candidate(agent_id=agent.id, name=f"Person {i}", email=f"person{i}@example.com", timezone="Europe/Berlin",
                  source=source, stage="started", invited_at=moment - timedelta(days=3),
                  last_activity_at=moment - timedelta(hours=5), deadline_at=moment + timedelta(days=2, hours=3))
        for i in range(n)])
    db.session.flush()
    db.session.add_all([Message(candidate_id=c.id, kind="reminder", step=1, channel="email", scheduled_for=moment,
                                status=MessageStatus.SCHEDULED, rule="Reminder 1: 24 h after the invite")
                        for c in db.session.query(Candidate)])
    db.session.commit()
    db.session.remove()


def test_choosing_a_bulk_action_keeps_the_ticked_rows(live_server, page):
    """Defect: choosing a bulk action re-submitted the filter form, which re-rendered the list
    and unticked every row, so "Apply" answered "Select at least one candidate first"."""
    _people()
    login(page, live_server, "rita@example.com", PASSWORD)
    page.goto(live_server.url("/candidates"))
    boxes = page.locator('input[name="ids"]')
    boxes.nth(0).check()
    boxes.nth(1).check()
    page.locator("#bulk-action").select_option("extend")
    page.wait_for_timeout(700)  # long enough for a filter request to come back and re-render
    assert [boxes.nth(i).is_checked() for i in range(3)] == [True, True, False]
    page.get_by_role("button", name="Apply to selected").click()
    page.get_by_text("2 candidates given more time.").wait_for()
    assert page.get_by_text("Select at least one candidate first").count() == 0


def test_the_days_box_shows_only_for_extend_deadline(live_server, page):
    """The bulk bar's "days" applies to "Extend deadline" alone; beside the other actions it
    looked like part of them (how many days to wait before sending?)."""
    _people(1)
    login(page, live_server, "rita@example.com", PASSWORD)
    page.goto(live_server.url("/candidates"))
    days = page.locator("#bulk-days")
    assert page.locator("#bulk-action").input_value() != "extend" and not days.is_visible()
    page.locator("#bulk-action").select_option("extend")
    days.wait_for(state="visible")
    page.locator("#bulk-action").select_option("export")
    days.wait_for(state="hidden")


def test_a_filter_select_still_filters_the_list_at_once(live_server, page):
    """The filters' own selects still reload the list (only the bulk action's select stopped)."""
    _people(2)
    login(page, live_server, "rita@example.com", PASSWORD)
    page.goto(live_server.url("/candidates"))
    page.get_by_label("Stage").select_option("completed")
    page.get_by_text("No candidates match.").wait_for()
    assert "stage=completed" in page.url


def _wider_than_screen(page) -> int:
    return page.evaluate("document.scrollingElement.scrollWidth - document.scrollingElement.clientWidth")


def test_the_candidates_list_fits_a_1366_px_screen_with_short_dates_and_human_sources(live_server, browser):
    """Defect: at 1366 px the Deadline column was clipped (the list scrolled sideways), dates
    wrapped to three lines and sources showed raw codes ("ats")."""
    _people(30)
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    try:
        login(page, live_server, "rita@example.com", PASSWORD)
        page.goto(live_server.url("/candidates"))
        assert _wider_than_screen(page) == 0
        wrap = page.locator("#candidate-results .table-wrap")
        assert wrap.evaluate("e => e.scrollWidth - e.clientWidth") == 0
        deadline = page.get_by_role("columnheader", name="Deadline")
        box = deadline.bounding_box()
        assert box["x"] + box["width"] <= 1366
        row = page.locator("tbody tr").first
        assert row.locator("td[data-label=Source]").inner_text().startswith("ATS")
        when = row.locator("td[data-label=Invited] time")
        assert when.inner_text() == "3 d ago"
        assert when.get_attribute("datetime").startswith("20")
        assert when.get_attribute("title").endswith("UTC")  # the exact time, on hover
        assert row.locator("td[data-label=Deadline] time").inner_text() == "in 2 d"
        # One line per date (they wrapped to three): a row is as tall as its two-line name cell.
        assert when.bounding_box()["height"] < 25 and row.bounding_box()["height"] < 75
        # Dense: six rows or more in the first screen under the search and filters (Pico's
        # base font grows to 20 px on wide screens, which left room for four).
        assert page.locator("tbody tr").nth(5).bounding_box()["y"] + 40 < 768
        # The header stays in view while the list scrolls.
        page.mouse.wheel(0, 900)
        page.wait_for_timeout(200)
        assert abs(deadline.bounding_box()["y"]) < 2
    finally:
        context.close()


def test_the_candidates_heading_keeps_add_candidates_beside_uploads_on_the_right(live_server, browser):
    """Defect: the page head spread its three parts apart, leaving Add Candidates floating in
    the middle of the screen, away from the title and from Uploads."""
    _people(1)
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    try:
        login(page, live_server, "rita@example.com", PASSWORD)
        page.goto(live_server.url("/candidates"))
        add = page.get_by_role("button", name="Add Candidates").bounding_box()
        uploads = page.locator(".page-head").get_by_role("link", name="Uploads").bounding_box()
        search = page.locator("#q").bounding_box()
        assert 0 < uploads["x"] - (add["x"] + add["width"]) < 40
        assert abs((uploads["x"] + uploads["width"]) - (search["x"] + search["width"])) < 2
    finally:
        context.close()


def test_live_search_shows_a_loading_indicator_while_it_waits(live_server, page):
    """Defect: the live search gave no sign that it was working (no hx-indicator)."""
    _people(2)
    login(page, live_server, "rita@example.com", PASSWORD)
    page.goto(live_server.url("/candidates"))
    indicator = page.locator("#list-loading")
    assert not indicator.is_visible()
    held = []
    page.route("**/candidates?q=Person*", lambda route: held.append(route))
    page.locator("#q").fill("Person 1")
    indicator.wait_for(state="visible")  # while the server has not answered
    assert held
    for route in held:
        route.continue_()
    indicator.wait_for(state="hidden")
    page.get_by_role("link", name="Person 1").wait_for()


def test_on_a_phone_the_nav_folds_into_a_menu_and_lists_stack_as_cards(live_server, browser):
    """Defect: on a 390 px phone the admin nav took three rows and the lists scrolled sideways."""
    _people(3)
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        login(page, live_server, "rita@example.com", PASSWORD)
        header = page.locator("body > header")
        assert header.bounding_box()["height"] < 90  # one row: the brand and the menu button
        assert not page.get_by_role("link", name="Outbox").is_visible()
        page.locator(".nav-menu > summary").click()
        page.get_by_role("link", name="Outbox").click()
        page.wait_for_url("**/outbox")
        for path in ("/candidates", "/outbox?status=scheduled", "/team", "/templates"):
            page.goto(live_server.url(path))
            assert _wider_than_screen(page) == 0, path
        page.goto(live_server.url("/candidates"))
        first, second = page.locator("tbody tr").nth(0).bounding_box(), page.locator("tbody tr").nth(1).bounding_box()
        assert first["width"] > 300 and second["y"] >= first["y"] + first["height"]  # cards, one under another
        assert page.locator("tbody tr").first.locator("td[data-label=Deadline]").is_visible()
        # Compact cards: the figures two to a line (a card was 285 px tall).
        card = page.locator("tbody tr").first
        stage, channel = (card.locator(f"td[data-label={label}]").bounding_box() for label in ("Stage", "Channel"))
        assert abs(stage["y"] - channel["y"]) < 2 and first["height"] < 230, first
    finally:
        context.close()


@pytest.mark.parametrize("path", ["/candidates", "/team", "/candidates/new", "/agents"])
def test_admin_pages_log_no_errors_in_the_browser_console(live_server, page, path):
    """Defect: the list's filter trigger was an htmx syntax error (a selector with a space needs
    parentheses), logged on every load of the candidates list."""
    _people(1)
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    login(page, live_server, "rita@example.com", PASSWORD)
    errors.clear()
    page.goto(live_server.url(path))
    page.wait_for_load_state("networkidle")
    assert errors == [], path
