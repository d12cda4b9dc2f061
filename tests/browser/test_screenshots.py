"""Screenshots of the main admin pages and the candidate pages at 1366×768 and 390×844,
written to docs/screenshots/ (git-ignored; `make screenshots` makes them). Every page is also
checked for the thing a screenshot shows worst: nothing may scroll sideways."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from milo_portal.clock import now
from milo_portal.demo import DEMO_PASSWORD, TEAM, create_demo_candidates, create_demo_data
from milo_portal.extensions import db
from milo_portal.models import Agent, Candidate, Message, MessageStatus
from tests.browser.conftest import login

pytestmark = pytest.mark.browser

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
SIZES = {"desktop": (1366, 768), "phone": (390, 844)}


def _demo() -> dict:
    create_demo_data(db.session)
    db.session.commit()
    create_demo_candidates(db.session, 120, seed=3, now=now())
    db.session.commit()
    agent = db.session.scalars(select(Agent).order_by(Agent.id)).first()
    people = db.session.scalars(select(Candidate).where(Candidate.agent_id == agent.id).order_by(Candidate.id)).all()
    done = next(c for c in people if c.stage == "completed")
    moment = now()
    # The candidate whose link is shown: invited today, as most people who open it are.
    waiting = Candidate(agent_id=agent.id, name="Sam Waiting", email="sam.waiting@example.com", stage="invited",
                        timezone="Europe/London", invited_at=moment, deadline_at=moment + timedelta(days=5))
    db.session.add(waiting)
    db.session.flush()
    for i, c in enumerate(people[:6]):
        status = MessageStatus.FAILED if i < 2 else MessageStatus.SCHEDULED
        db.session.add(Message(candidate_id=c.id, kind="reminder", step=9, channel="email", status=status,
                               scheduled_for=moment + timedelta(hours=i), attempts=1 if i < 2 else 0,
                               last_error="550 5.1.1 No such user" if i < 2 else None, rule="Reminder 1: 24 h after the invite"))
    db.session.commit()
    found = {"agent": agent.id, "done": done.id, "share": agent.share_token, "token": waiting.token}
    db.session.remove()
    return found


def _pages(ids: dict) -> list[tuple[str, str]]:
    return [
        ("agents", "/agents"), ("agent", f"/agents/{ids['agent']}"), ("candidates", "/candidates"),
        ("candidate", f"/candidates/{ids['done']}"), ("outbox", "/outbox?status=failed"), ("templates", "/templates"),
        ("template-editor", "/templates/invite/email/A"), ("settings", "/settings"), ("team", "/team"),
        ("upload", "/candidates/uploads/new"), ("uploads", "/candidates/uploads"),
        # Every agent, source, channel, variant and the heat map of the demo history: the widest tables.
        ("metrics", "/metrics?period=90"),
    ]


@pytest.mark.parametrize("size", list(SIZES))
def test_screenshots_of_the_main_pages_show_nothing_scrolling_sideways(live_server, browser, size):
    ids = _demo()
    width, height = SIZES[size]
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(15_000)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        login(page, live_server, TEAM[0][1], DEMO_PASSWORD)
        wide = []
        shots = [(name, live_server.url(path)) for name, path in _pages(ids)] + [
            ("candidate-landing", live_server.url(f"/i/{ids['token']}")),
            ("candidate-share", live_server.url(f"/s/{ids['share']}")),
        ]
        for name, url in shots:
            response = page.goto(url)
            assert response.status == 200, (name, response.status)
            page.wait_for_load_state("networkidle")
            # Sideways scrolling of the page, or of a table inside its own scroll box (a clipped column).
            over = page.evaluate("""Math.max(
                document.scrollingElement.scrollWidth - document.scrollingElement.clientWidth,
                ...[...document.querySelectorAll('.table-wrap')].map(e => e.scrollWidth - e.clientWidth), 0)""")
            # The whole page in one shot: a viewport as tall as the page (full_page=True leaves
            # the sandboxed e-mail preview frame blank in Chromium).
            tall = min(page.evaluate("document.scrollingElement.scrollHeight"), 3 * height)
            page.set_viewport_size({"width": width, "height": max(tall, height)})
            page.wait_for_timeout(150)
            page.screenshot(path=str(SHOTS / f"{name}-{size}.png"))
            page.set_viewport_size({"width": width, "height": height})
            if over > 0:
                wide.append((name, over))
        assert wide == [], f"pages wider than {width} px: {wide}"
    finally:
        context.close()
