"""The Metrics page in Chromium: charts drawn with the filters applied, the agent filter
updating the figures in place (no page load) and the URL, and no axe-core violations."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import expect

from milo_portal.extensions import db
from tests import metrics_data
from tests.browser.conftest import login
from tests.conftest import PASSWORD, make_user

pytestmark = pytest.mark.browser

AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
RANGE = "period=custom&from=2026-11-01&to=2026-11-19"


def _axe(page) -> list:
    page.add_script_tag(content=AXE.read_text())
    result = page.evaluate("axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa']}})")
    return [{"id": v["id"], "help": v["help"], "nodes": [n["html"][:200] for n in v["nodes"][:3]]}
            for v in result["violations"]]


def test_metrics_page_filters_in_place_and_passes_axe(live_server, browser):
    if not AXE.exists():
        pytest.fail(f"axe-core is missing at {AXE}: run `make setup` (npm ci).")
    make_user("rita@example.com", "Rita Recruiter")
    ids = metrics_data.build()
    db.session.remove()  # no transaction of the test's may stand in the server's way
    # bypass_csp only lets the test inject axe; the page's own policy stays on otherwise.
    context = browser.new_context(viewport={"width": 1366, "height": 900}, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        login(page, live_server, "rita@example.com", PASSWORD)
        page.goto(live_server.url(f"/metrics?{RANGE}"))
        for chart in ("#funnel-chart", "#histogram-chart", "#heat-chart", "#by-channel-chart"):
            expect(page.locator(chart)).to_be_visible()
        invited = page.locator("#funnel table tbody tr").first.locator("td").first
        expect(invited).to_have_text("10")
        assert _axe(page) == [], json.dumps(_axe(page), indent=2)

        page.evaluate("window.__stillHere = true")  # gone if the page reloads
        page.locator("#metrics-agent").select_option(str(ids["agent_b"]))
        expect(invited).to_have_text("4")  # P6, P7, P8, P11
        assert page.evaluate("window.__stillHere") is True
        assert f"agent_id={ids['agent_b']}" in page.url and "from=2026-11-01" in page.url
        expect(page.locator("#funnel-chart")).to_be_visible()

        # The URL is the view: opened afresh it shows the same figures.
        page.goto(page.url)
        expect(page.locator("#funnel table tbody tr").first.locator("td").first).to_have_text("4")
    finally:
        context.close()


def test_a_custom_range_chosen_on_the_page_shows_its_days(live_server, browser):
    """Defect: choosing "a custom range" reloaded the figures with no dates at once, which
    answered "Enter both dates" and put the select back on 30 days; the dates typed next were
    sent with period=30 and ignored."""
    make_user("rita@example.com", "Rita Recruiter")
    metrics_data.build()
    db.session.remove()
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        login(page, live_server, "rita@example.com", PASSWORD)
        page.goto(live_server.url("/metrics"))
        period = page.locator('select[name="period"]')
        period.select_option("custom")
        page.wait_for_timeout(500)  # long enough for a reload to come back and redraw the form
        expect(period).to_have_value("custom")
        expect(page.get_by_text("Enter both dates")).to_have_count(0)
        page.locator('input[name="from"]').fill("2026-11-01")
        page.wait_for_timeout(300)
        expect(period).to_have_value("custom")
        page.locator('input[name="to"]').fill("2026-11-19")
        expect(page.locator("#metrics-range")).to_contain_text("1 Nov 2026")
        expect(page.locator("#metrics-range")).to_contain_text("19 Nov 2026")
        expect(page.locator("#funnel table tbody tr").first.locator("td").first).to_have_text("10")
        assert "period=custom" in page.url and "from=2026-11-01" in page.url and "to=2026-11-19" in page.url
        expect(period).to_have_value("custom")
    finally:
        context.close()
