"""The admin lists in Chromium: bulk actions keep the selection, the candidates list fits a
1366 px screen, and on a phone the nav folds away and the lists stack as cards."""
from __future__ import annotations

from datetime import timedelta

import pytest

from milo_portal.clock import now
from milo_portal.extensions import db
from milo_portal.models import Candidate
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


def test_a_filter_select_still_filters_the_list_at_once(live_server, page):
    """The filters' own selects still reload the list (only the bulk action's select stopped)."""
    _people(2)
    login(page, live_server, "rita@example.com", PASSWORD)
    page.goto(live_server.url("/candidates"))
    page.get_by_label("Stage").select_option("completed")
    page.get_by_text("No candidates match.").wait_for()
    assert "stage=completed" in page.url
