"""A recruiter drops a spreadsheet and a resume on the drop zone, fixes a column, confirms,
and the invites go out; without JavaScript the same form uploads and reviews."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from milo_portal.extensions import db
from milo_portal.followups.services import dispatch
from milo_portal.models import Candidate, Message
from tests.browser.conftest import login
from tests.conftest import PASSWORD, make_agent, make_user

pytestmark = pytest.mark.browser

FAIR = "Full name,Contact\r\nAda Lovelace,ada@example.com\r\nGrace Hopper,grace@example.com\r\n"
RESUME = "Jane Doe\r\nSupport engineer\r\njane.doe@example.com\r\n"

DROP = """([csv, txt]) => {
  const files = new DataTransfer();
  files.items.add(new File([csv], "fair.csv", {type: "text/csv"}));
  files.items.add(new File([txt], "jane.txt", {type: "text/plain"}));
  // Dropped beside the zone: the page must keep it (a default drop would open the file).
  const beside = new DragEvent("drop", {bubbles: true, cancelable: true, dataTransfer: files});
  const kept = !document.querySelector("h1").dispatchEvent(beside);
  const zone = document.querySelector("[data-drop-zone]");
  for (const type of ["dragenter", "dragover", "drop"]) {
    zone.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: files}));
  }
  return [kept, Array.from(document.querySelector("[data-file-input]").files).map(f => f.name)];
}"""

WATCH_PROGRESS = """() => {
  const form = document.querySelector("[data-upload-form]");
  const bar = document.querySelector("[data-upload-progress]");
  form.addEventListener("htmx:xhr:progress", () => window.reportProgress(bar.value));
}"""


def test_drop_two_files_fix_a_column_confirm_and_the_invite_goes_out(live_server, page, app, smtp, team_settings,
                                                                    tmp_path):
    make_user("rita@example.com", "Rita Recruiter")
    agent = make_agent("Support specialist")
    agent_id = agent.id
    db.session.remove()
    live_server.app.config["MILO_IMPORT_DIR"] = str(tmp_path / "imports")
    login(page, live_server, "rita@example.com", PASSWORD)

    page.goto(live_server.url(f"/agents/{agent_id}"))
    page.get_by_text("Add Candidates").click()
    page.get_by_role("link", name="Bulk upload").click()
    page.wait_for_load_state()  # the drop zone's script runs before the page's load event
    expect(page.get_by_label("Interview")).to_have_value(str(agent_id))
    progress: list[int] = []
    page.expose_function("reportProgress", lambda value: progress.append(value))
    page.evaluate(WATCH_PROGRESS)
    kept, names = page.evaluate(DROP, [FAIR, RESUME])
    assert kept and names == ["fair.csv", "jane.txt"]
    expect(page.locator("[data-file-list]")).to_contain_text("fair.csv")
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url(re.compile(r"/candidates/uploads/\d+$"))
    assert progress and progress[-1] == 100

    # The "Contact" column was not recognised: only the resume is new until it is mapped.
    expect(page.get_by_role("button", name="Add 1 candidate and invite them")).to_be_visible()
    expect(page.locator(".review-rows")).to_contain_text("no way to contact")
    expect(page.locator(".review-rows")).to_contain_text("Read: name on line 1; e-mail on line 3")
    page.get_by_label("Contact").select_option("email")
    expect(page.get_by_role("button", name="Add 3 candidates and invite them")).to_be_visible()
    page.get_by_role("button", name="Add 3 candidates and invite them").click()
    expect(page.get_by_role("heading", name="done")).to_be_visible()
    expect(page.locator("main")).to_contain_text("Added 3 candidates and queued their invites.")
    expect(page.get_by_role("link", name="Download the report (CSV)")).to_be_visible()

    db.session.remove()
    ada = db.session.scalars(select(Candidate).where(Candidate.email == "ada@example.com")).one()
    invite = db.session.scalars(select(Message).where(Message.candidate_id == ada.id)).one()
    token, due = ada.token, invite.scheduled_for
    db.session.remove()
    result = dispatch(db.session, due)
    assert len(result.sent) == 3, result
    received = [m for m in smtp.wait_for(3) if "ada@example.com" in m.rcpt_tos]
    assert len(received) == 1
    assert f"/i/{token}" in received[0].message.get_body(("plain",)).get_content()


def test_without_javascript_the_form_uploads_and_reviews(live_server, browser, tmp_path):
    make_user("rita@example.com", "Rita Recruiter")
    make_agent("Support specialist")
    db.session.remove()
    live_server.app.config["MILO_IMPORT_DIR"] = str(tmp_path / "imports")
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        login(page, live_server, "rita@example.com", PASSWORD)
        page.goto(live_server.url("/candidates/uploads/new"))
        csv_file = tmp_path / "fair.csv"
        csv_file.write_text("Name,Email\r\nAda Lovelace,ada@example.com\r\nBad,nope\r\n")
        page.locator("input[type=file]").set_input_files(str(csv_file))
        page.get_by_role("button", name="Upload").click()
        page.wait_for_url(re.compile(r"/candidates/uploads/\d+$"))
        main = page.locator("main").inner_text()
        assert "1 new · 0 duplicate · 1 invalid" in main and "bad e-mail “nope”" in main
        page.get_by_role("button", name="Add 1 candidate and invite them").click()
        assert "Added 1 candidate and queued their invites." in page.locator("main").inner_text()
    finally:
        context.close()


def test_the_invite_checkbox_can_be_clicked_past_its_hint(live_server, page):
    """Defect: the grey hint after "Invite automatically" was laid over its own checkbox
    (Pico pulls an `input + small` hint up under the field), so a click never reached it."""
    make_user("rita@example.com", "Rita Recruiter")
    make_agent("Picker")
    login(page, live_server, "rita@example.com", PASSWORD)
    page.goto(live_server.url("/candidates/uploads/new"))
    box = page.get_by_label("Invite automatically")
    box.uncheck(timeout=5000)
    expect(box).not_to_be_checked()
