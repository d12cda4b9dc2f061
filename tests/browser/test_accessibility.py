"""Candidate pages pass axe-core's WCAG 2 A/AA rules (labels, contrast, focus, lang...)
on a phone-sized screen. axe-core comes from npm (devDependency), like every front-end package."""
from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from milo_portal.clock import now
from milo_portal.extensions import db
from milo_portal.models import Candidate
from tests.conftest import make_agent

pytestmark = pytest.mark.browser

AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture()
def audited(browser):
    if not AXE.exists():
        pytest.fail(f"axe-core is missing at {AXE}: run `make setup` (npm ci).")
    # bypass_csp only lets the test inject axe; the pages' own policy is checked elsewhere.
    context = browser.new_context(viewport={"width": 390, "height": 844}, bypass_csp=True)
    page = context.new_page()

    def check(url: str | None) -> None:
        if url:
            page.goto(url)
        page.add_script_tag(content=AXE.read_text())
        result = page.evaluate("axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa']}})")
        problems = [{"id": v["id"], "help": v["help"], "nodes": [n["html"] for n in v["nodes"][:3]]}
                    for v in result["violations"]]
        assert problems == [], f"{page.url}\n{json.dumps(problems, indent=2)}"

    yield page, check
    context.close()


def test_every_candidate_page_passes_axe(live_server, audited):
    page, check = audited
    agent = make_agent("Warehouse associate", questions=("Why this job?", "Which shifts?"))
    candidate = Candidate(agent_id=agent.id, name="Ada", email="ada@example.com", timezone="Europe/Berlin",
                          deadline_at=now() + timedelta(days=3))
    late = Candidate(agent_id=agent.id, name="Late", email="late@example.com", timezone="UTC",
                     deadline_at=now() - timedelta(days=1))
    db.session.add_all([candidate, late])
    db.session.commit()
    share, token, late_token = agent.share_token, candidate.token, late.token
    db.session.remove()

    check(live_server.url(f"/s/{share}"))
    page.get_by_role("button", name="Start the interview").click()  # empty form: errors shown
    page.locator("#name-error").wait_for()
    check(None)  # the page as it is, with its errors
    check(live_server.url(f"/i/{token}"))
    page.get_by_role("button", name="Start the interview").click()
    page.get_by_text("Question 1 of 2").wait_for()
    check(page.url)
    page.get_by_role("textbox").fill("An answer.")
    page.get_by_role("button", name="Save and continue").click()
    page.get_by_text("Question 2 of 2").wait_for()
    page.get_by_role("textbox").fill("Another answer.")
    page.get_by_role("button", name="Save and review").click()
    page.get_by_role("heading", name="Review your answers").wait_for()
    check(page.url)
    page.get_by_role("button", name="Submit my interview").click()
    page.get_by_role("heading", name="Thank you, Ada!").wait_for()
    check(page.url)
    check(live_server.url(f"/i/{late_token}"))
    check(live_server.url(f"/u/{token}"))
    check(live_server.url("/s/not-a-share-token-123"))
