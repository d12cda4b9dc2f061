"""A stranger on a phone takes the interview through the share link, stops midway and
resumes; a recruiter adds someone by hand and their copied link works the same way."""
from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect

from milo_portal.clock import now
from milo_portal.extensions import db
from milo_portal.models import Candidate
from tests.browser.conftest import login
from tests.conftest import PASSWORD, make_agent, make_user

pytestmark = pytest.mark.browser

IPHONE_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
             "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1")


@pytest.fixture()
def phone(browser):
    context = browser.new_context(viewport={"width": 390, "height": 844}, user_agent=IPHONE_UA,
                                  is_mobile=True, has_touch=True, device_scale_factor=3)
    yield context
    context.close()


def _answer(page, text):
    page.get_by_role("textbox").fill(text)
    page.get_by_role("button", name="Save and").click()


def test_a_stranger_on_a_phone_uses_the_share_link_stops_and_resumes(live_server, phone, page):
    make_user("rita@example.com", "Rita Recruiter")
    agent = make_agent("Night shift picker", questions=("Why this job?", "Which shifts?", "How will you commute?"))
    share = live_server.url(f"/s/{agent.share_token}?src=flyer")
    db.session.remove()

    mobile = phone.new_page()
    mobile.goto(share)
    assert mobile.locator("html").get_attribute("lang") == "en"
    mobile.get_by_label("Your name").fill("Sam Stranger")
    mobile.get_by_label("Your e-mail").fill("sam@example.com")
    mobile.get_by_role("button", name="Start the interview").click()
    mobile.get_by_text("Question 1 of 3").wait_for()
    personal = mobile.url.split("/q/")[0]
    _answer(mobile, "I like nights.")
    mobile.get_by_text("Question 2 of 3").wait_for()
    _answer(mobile, "Weekends too.")
    mobile.get_by_text("Question 3 of 3").wait_for()
    # No horizontal scrolling on a phone.
    assert mobile.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    mobile.close()

    resumed = phone.new_page()
    resumed.goto(personal)
    resumed.get_by_text("Question 3 of 3").wait_for()
    _answer(resumed, "By bike.")
    resumed.get_by_role("heading", name="Review your answers").wait_for()
    resumed.get_by_role("button", name="Submit my interview").click()
    resumed.get_by_role("heading", name="Thank you, Sam!").wait_for()

    login(page, live_server, "rita@example.com", PASSWORD)
    candidate = db.session.query(Candidate).one()
    cid = candidate.id
    db.session.remove()
    page.goto(live_server.url(f"/candidates/{cid}"))
    body = page.locator("main").inner_text()
    assert "completed" in body and "mobile" in body
    for text in ("I like nights.", "Weekends too.", "By bike.", "flyer"):
        assert text in body
    for stage in ("clicked", "started", "completed"):
        assert page.locator("table.timeline td", has_text=stage).count() >= 1


def test_a_recruiter_adds_someone_copies_their_link_and_it_works_on_a_phone(live_server, phone, page):
    make_user("rita@example.com", "Rita Recruiter")
    make_agent("Barista", questions=("Favourite drink?",))
    db.session.remove()
    login(page, live_server, "rita@example.com", PASSWORD)
    page.goto(live_server.url("/candidates"))
    page.get_by_role("button", name="Add Candidates").click()
    page.get_by_role("link", name="Add manually").click()
    page.get_by_label("Name").fill("Ada Lovelace")
    page.get_by_label("E-mail").fill("not-an-email")
    page.get_by_label("Phone").click()  # leaving the field checks it
    page.locator("#email-error").wait_for()
    assert "not valid" in page.locator("#email-error").inner_text()
    page.get_by_label("E-mail").fill("ada@example.com")
    page.get_by_label("Phone").fill("+81 90-1234-5678")
    page.get_by_label("Invite by").focus()
    expect(page.locator("#timezone")).to_have_value("Asia/Tokyo")
    page.get_by_label("Invite by").select_option("link")
    page.get_by_role("button", name="Add candidate").click()
    page.locator("#candidate-link").wait_for()
    link = page.locator("#candidate-link").input_value()
    assert "/i/" in link
    page.get_by_role("button", name="Copy link").click()
    page.get_by_role("button", name="Copied").wait_for()

    mobile = phone.new_page()
    mobile.goto(link)
    mobile.get_by_role("button", name="Start the interview").click()
    mobile.get_by_text("Question 1 of 1").wait_for()
    _answer(mobile, "Flat white")
    mobile.get_by_role("button", name="Submit my interview").click()
    mobile.get_by_role("heading", name="Thank you, Ada!").wait_for()

    page.reload()
    assert "Flat white" in page.locator("main").inner_text()
    assert page.locator("h1 .stage-badge").inner_text() == "completed"


def test_add_manually_gives_the_chosen_interviews_deadline_counted_from_the_invite(live_server, page):
    """Defect: the form pre-filled the first interview's deadline; choosing another interview
    kept that date, which then counted as a date the recruiter had picked (7 days from the add,
    not the chosen interview's 10 days from the invite)."""
    make_user("rita@example.com", "Rita Recruiter")
    make_agent("Barista", deadline_days=7)
    make_agent("Welder", deadline_days=10)
    db.session.remove()
    login(page, live_server, "rita@example.com", PASSWORD)
    page.goto(live_server.url("/candidates/new"))
    page.get_by_label("Interview").select_option(label="Welder — Acme")
    page.get_by_label("Name").fill("Ada Lovelace")
    page.get_by_label("E-mail").fill("ada@example.com")
    page.get_by_label("Time zone").select_option("Asia/Tokyo")
    form_text = page.locator("main").inner_text()
    page.get_by_role("button", name="Add candidate").click()
    page.locator("#candidate-link").wait_for()
    ada = db.session.query(Candidate).filter_by(email="ada@example.com").one()
    assert ada.deadline_follows_invite
    today = now().astimezone(ZoneInfo("Asia/Tokyo")).date()
    assert (ada.deadline_at.astimezone(ZoneInfo("Asia/Tokyo")).date() - today).days == 10
    # The form and the candidate's page say how the deadline is counted.
    assert "counted from the day the invite goes" in form_text
    assert "counted from the invite" in page.locator("main").inner_text()


def test_add_manually_takes_the_chosen_interviews_channel_until_the_recruiter_picks_one(live_server, page):
    """Defect: the channel stayed the first interview's default (e-mail) when another interview,
    whose candidates are reached by SMS, was chosen."""
    make_user("rita@example.com", "Rita Recruiter")
    make_agent("Barista", default_channel="email")
    make_agent("Welder", default_channel="sms")
    db.session.remove()
    login(page, live_server, "rita@example.com", PASSWORD)
    page.goto(live_server.url("/candidates/new"))
    channel = page.locator("#channel")
    assert channel.input_value() == "email"
    page.get_by_label("Interview").select_option(label="Welder — Acme")
    assert channel.input_value() == "sms"
    page.get_by_label("Interview").select_option(label="Barista — Acme")
    assert channel.input_value() == "email"
    channel.select_option("whatsapp")  # the recruiter's own choice stays
    page.get_by_label("Interview").select_option(label="Welder — Acme")
    assert channel.input_value() == "whatsapp"
