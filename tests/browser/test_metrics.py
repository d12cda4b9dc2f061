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
