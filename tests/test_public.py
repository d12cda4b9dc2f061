"""The candidate's side: the unique link, the share link, and what wrong tokens reveal."""
from __future__ import annotations

import gzip
import re

from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from milo_portal.clock import now
from milo_portal.extensions import db
from milo_portal.models import Answer, Candidate, Event, Message, Stage
from milo_portal.public.services import device_class
from tests.conftest import make_agent

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1")
DESKTOP = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
ROOT = Path(__file__).resolve().parent.parent


def _candidate(agent=None, **fields) -> Candidate:
    agent = agent or make_agent()
    fields.setdefault("deadline_at", now() + timedelta(days=5))
    c = Candidate(agent_id=agent.id, name=fields.pop("name", "Ada Lovelace"), email=fields.pop("email", "ada@example.com"),
                  timezone="Europe/Berlin", stage=fields.pop("stage", Stage.INVITED), **fields)
    db.session.add(c)
    db.session.commit()
    return c


def _events(c, type_):
    return db.session.query(Event).filter_by(candidate_id=c.id, type=type_).count()


@pytest.mark.parametrize("ua,expected", [
    (IPHONE, "mobile"),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120 Mobile Safari/537.36", "mobile"),
    ("Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1", "tablet"),
    ("Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120 Safari/537.36", "tablet"),
    (DESKTOP, "desktop"),
    ("", "desktop"),
])
def test_it_classifies_devices(ua, expected):
    assert device_class(ua) == expected


def test_the_full_interview_clicked_started_answered_completed(client):
    c = _candidate()
    r = client.get(f"/i/{c.token}", headers={"User-Agent": IPHONE})
    body = r.get_data(as_text=True)
    assert r.status_code == 200 and "Interview: Support specialist" in body
    assert "3</strong> questions" in body and "About <strong>" in body and "CET" in body  # deadline in Berlin time
    db.session.refresh(c)
    assert c.stage == Stage.INVITED and c.visited_at is not None  # a visit, not yet a human click
    assert client.post(f"/i/{c.token}/seen", headers={"User-Agent": IPHONE}).status_code == 204
    db.session.refresh(c)
    assert (c.stage, c.device_class) == (Stage.CLICKED, "mobile")

    r = client.post(f"/i/{c.token}/start", {"name": "Ada King", "email": "ada@example.com"})
    assert r.headers["Location"] == f"/i/{c.token}/q/1"
    for n in (1, 2, 3):
        page = client.get(f"/i/{c.token}/q/{n}").get_data(as_text=True)
        assert f"Question {n} of 3" in page
        r = client.post(f"/i/{c.token}/q/{n}", {"answer": f"Answer {n}"})
    assert r.headers["Location"] == f"/i/{c.token}/review"
    review = client.get(f"/i/{c.token}/review").get_data(as_text=True)
    assert "Answer 1" in review and "Answer 3" in review
    r = client.post(f"/i/{c.token}/submit")
    assert r.headers["Location"] == f"/i/{c.token}/done"
    assert "Thank you, Ada!" in client.get(r.headers["Location"]).get_data(as_text=True)
    db.session.refresh(c)
    assert c.stage == Stage.COMPLETED and c.name == "Ada King"
    assert [_events(c, t) for t in ("clicked", "started", "answered", "completed")] == [1, 1, 3, 1]


def test_resuming_goes_to_the_first_unanswered_question(client):
    c = _candidate()
    client.get(f"/i/{c.token}")
    client.post(f"/i/{c.token}/start", {"name": "Ada", "email": "ada@example.com"})
    client.post(f"/i/{c.token}/q/1", {"answer": "one"})
    # A new visit (another day, another browser): straight back to question 2, no second click.
    fresh = client.application.test_client()
    r = fresh.get(f"/i/{c.token}")
    assert r.headers["Location"] == f"/i/{c.token}/q/2"
    assert _events(c, "clicked") == 1


def test_an_empty_or_overlong_answer_is_refused_and_nothing_is_lost(client):
    c = _candidate(stage=Stage.STARTED, started_at=now())
    client.post(f"/i/{c.token}/q/1", {"answer": "kept"})
    r = client.post(f"/i/{c.token}/q/2", {"answer": "   "})
    assert r.status_code == 422 and "Please write an answer" in r.get_data(as_text=True)
    r = client.post(f"/i/{c.token}/q/2", {"answer": "x" * 5001})
    assert r.status_code == 422 and "under 5000 characters" in r.get_data(as_text=True)
    assert [a.body for a in db.session.query(Answer)] == ["kept"]


def test_submitting_with_missing_answers_is_refused(client):
    c = _candidate(stage=Stage.STARTED, started_at=now())
    client.post(f"/i/{c.token}/q/1", {"answer": "only one"})
    r = client.post(f"/i/{c.token}/submit")
    db.session.refresh(c)
    assert c.stage == Stage.STARTED
    assert r.status_code in (302, 422)


def test_start_needs_a_name_and_a_valid_email(client):
    c = _candidate(email=None, phone="+14155550100")
    r = client.post(f"/i/{c.token}/start", {"name": "", "email": "nope"})
    body = r.get_data(as_text=True)
    assert r.status_code == 422 and "Please enter your name." in body and "not valid" in body
    db.session.refresh(c)
    assert c.stage == Stage.INVITED


def test_after_completion_only_the_thank_you_page(client):
    c = _candidate(stage=Stage.COMPLETED)
    for url in (f"/i/{c.token}", f"/i/{c.token}/q/1", f"/i/{c.token}/review"):
        r = client.get(url, follow_redirects=True)
        assert "Thank you" in r.get_data(as_text=True), url
    r = client.post(f"/i/{c.token}/q/1", {"answer": "late change"})
    assert r.headers["Location"] == f"/i/{c.token}/done"
    assert db.session.query(Answer).count() == 0


def test_after_the_deadline_the_expired_page_and_the_candidate_expires(client):
    c = _candidate(stage=Stage.STARTED, deadline_at=now() - timedelta(minutes=1))
    for url in (f"/i/{c.token}", f"/i/{c.token}/q/1"):
        body = client.get(url).get_data(as_text=True)
        assert "The deadline for this interview has passed" in body
    db.session.refresh(c)
    assert c.stage == Stage.EXPIRED and _events(c, "expired") == 1


def test_archived_agent_shows_closed_on_the_candidate_link(client):
    agent = make_agent(archived_at=now())
    c = _candidate(agent)
    body = client.get(f"/i/{c.token}").get_data(as_text=True)
    assert "This interview is closed" in body
    db.session.refresh(c)
    assert c.stage == Stage.INVITED


@pytest.mark.parametrize("path", ["/i/{t}", "/i/{t}/q/1", "/i/{t}/review", "/i/{t}/done"])
@pytest.mark.parametrize("token", ["wrong-token-wrong-token-1", "x", "../../etc", "A" * 200])
def test_wrong_tokens_are_a_plain_404(client, path, token):
    _candidate()
    r = client.get(path.format(t=token))
    assert r.status_code == 404
    body = r.get_data(as_text=True)
    assert "Ada" not in body and "Support specialist" not in body


@pytest.mark.parametrize("path", ["/i/{t}/start", "/i/{t}/q/1", "/i/{t}/submit"])
def test_wrong_tokens_are_a_plain_404_on_post(client, path):
    assert client.post(path.format(t="wrong-token-wrong-token-1")).status_code == 404


def test_no_candidate_page_shows_another_candidate(client):
    agent = make_agent()
    me = _candidate(agent)
    _candidate(agent, name="Zelda Secret", email="zelda@example.com")
    for url in (f"/i/{me.token}",):
        assert "Zelda" not in client.get(url).get_data(as_text=True)


# --- external interview -------------------------------------------------------------------

def test_external_mode_sends_the_candidate_on_with_a_reference(client):
    agent = make_agent(external_url="https://tool.example/interview?lang=en")
    c = _candidate(agent)
    client.get(f"/i/{c.token}")
    r = client.post(f"/i/{c.token}/start", {"name": "Ada", "email": "ada@example.com"})
    page = client.get(r.headers["Location"]).get_data(as_text=True)
    assert f"https://tool.example/interview?lang=en&amp;milo_ref={c.token}" in page
    db.session.refresh(c)
    assert c.stage == Stage.STARTED
    assert client.get(f"/i/{c.token}/q/1").headers["Location"] == f"/i/{c.token}"


# --- share link ---------------------------------------------------------------------------

def test_share_link_makes_a_started_candidate_with_the_source(client):
    agent = make_agent()
    page = client.get(f"/s/{agent.share_token}?src=linkedin").get_data(as_text=True)
    assert "Interview: Support specialist" in page and 'value="linkedin"' in page
    r = client.post(f"/s/{agent.share_token}", {"name": "Stranger Danger", "email": "s@example.com", "phone": "",
                                                "src": "linkedin"}, headers={"User-Agent": IPHONE})
    c = db.session.query(Candidate).one()
    assert r.headers["Location"] == f"/i/{c.token}/q/1"
    assert (c.source, c.source_detail, c.stage, c.device_class) == ("share_link", "linkedin", Stage.STARTED, "mobile")
    assert [_events(c, t) for t in ("added", "clicked", "started")] == [1, 1, 1]
    assert c.deadline_at > now() + timedelta(days=6)


def test_share_link_never_opens_an_existing_candidates_interview(client):
    agent = make_agent()
    victim = _candidate(agent, stage=Stage.STARTED)
    r = client.post(f"/s/{agent.share_token}", {"name": "Impostor", "email": "ADA@example.com", "phone": ""})
    body = r.get_data(as_text=True)
    assert r.status_code == 200 and "we have sent its personal interview link" in " ".join(body.split())
    assert "already registered" not in body and "Ada" not in body
    assert victim.token not in body and "/i/" not in body
    assert db.session.query(Candidate).count() == 1
    sent = db.session.query(Message).one()
    assert (sent.kind, sent.channel, sent.candidate_id) == ("link_resend", "email", victim.id)
    # Asked again within the hour: no second message.
    client.post(f"/s/{agent.share_token}", {"name": "Impostor", "email": "ada@example.com", "phone": ""})
    assert db.session.query(Message).count() == 1
    db.session.refresh(victim)
    assert victim.name == "Ada Lovelace"


def test_share_form_errors_are_shown_and_nothing_is_saved(client):
    agent = make_agent()
    r = client.post(f"/s/{agent.share_token}", {"name": "", "email": "bad", "phone": ""})
    body = r.get_data(as_text=True)
    assert r.status_code == 422 and "Enter the candidate" not in body
    assert 'id="email-error"' in body and 'id="name-error"' in body
    assert db.session.query(Candidate).count() == 0


@pytest.mark.parametrize("state", ["archived", "off", "rotated", "wrong"])
def test_closed_share_links_say_closed_politely(client, state):
    agent = make_agent()
    token = agent.share_token
    if state == "archived":
        agent.archived_at = now()
    elif state == "off":
        agent.share_enabled = False
    elif state == "rotated":
        agent.share_token = "a-brand-new-share-token-123"
    else:
        token = "not-the-share-token-123"
    db.session.commit()
    for r in (client.get(f"/s/{token}"), client.post(f"/s/{token}", {"name": "X", "email": "x@example.com"})):
        assert r.status_code == 404
        assert "This interview is closed" in r.get_data(as_text=True)
    assert db.session.query(Candidate).count() == 0


def test_share_page_copes_with_two_people_racing_on_one_email(app, client):
    """The unique (agent, e-mail) constraint turns the second insert into 'already registered'."""
    from milo_portal.candidates import services as cs

    agent = make_agent()
    contact = cs.CleanContact(name="A", email="same@example.com", phone=None, timezone="UTC", channel="email")
    first, created = cs.add_candidate(db.session, agent, contact, now() + timedelta(days=1), now(), source="share_link")
    db.session.commit()
    # The second request checked before the first committed: its insert hits the constraint.
    original = cs.find_existing
    calls = {"n": 0}

    def blind_once(*args):
        calls["n"] += 1
        return None if calls["n"] == 1 else original(*args)

    cs.find_existing = blind_once
    try:
        second, created2 = cs.add_candidate(db.session, agent, contact, now() + timedelta(days=1), now(), source="share_link")
    finally:
        cs.find_existing = original
    assert created and not created2 and second.id == first.id


# --- weight and accessibility -------------------------------------------------------------

class _A11y(HTMLParser):
    def __init__(self):
        super().__init__()
        self.lang = None
        self.labels_for = set()
        self.controls = []
        self.images_without_alt = 0
        self.positive_tabindex = 0
        self.assets = []
        self._in_label = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "html":
            self.lang = a.get("lang")
        if tag == "label":
            self._in_label += 1
            if a.get("for"):
                self.labels_for.add(a["for"])
        if tag in ("input", "textarea", "select") and a.get("type") not in ("hidden", "submit"):
            self.controls.append((a.get("id"), bool(self._in_label), a.get("aria-label"), a.get("aria-labelledby")))
        if tag == "progress":
            self.controls.append((a.get("id"), False, a.get("aria-label"), a.get("aria-labelledby")))
        if tag == "img" and "alt" not in a:
            self.images_without_alt += 1
        if a.get("tabindex", "0").lstrip("-").isdigit() and int(a.get("tabindex", "0")) > 0:
            self.positive_tabindex += 1
        if tag == "script" and a.get("src"):
            self.assets.append(a["src"])
        if tag == "link" and a.get("rel") == "stylesheet":
            self.assets.append(a["href"])

    def handle_endtag(self, tag):
        if tag == "label":
            self._in_label -= 1


def _candidate_pages(client, headers=None):
    agent = make_agent()
    c = _candidate(agent)
    pages = {"share": client.get(f"/s/{agent.share_token}", headers=headers),
             "landing": client.get(f"/i/{c.token}", headers=headers)}
    client.post(f"/i/{c.token}/start", {"name": "Ada", "email": "ada@example.com"})
    pages["question"] = client.get(f"/i/{c.token}/q/1", headers=headers)
    for n in (1, 2, 3):
        client.post(f"/i/{c.token}/q/{n}", {"answer": "ok"})
    pages["review"] = client.get(f"/i/{c.token}/review", headers=headers)
    client.post(f"/i/{c.token}/submit")
    pages["done"] = client.get(f"/i/{c.token}/done", headers=headers)
    expired = _candidate(agent, email="e@example.com", deadline_at=now() - timedelta(days=1))
    pages["expired"] = client.get(f"/i/{expired.token}", headers=headers)
    return pages


def test_candidate_pages_pass_basic_accessibility_checks(client):
    for name, response in _candidate_pages(client).items():
        assert response.status_code == 200, name
        checker = _A11y()
        checker.feed(response.get_data(as_text=True))
        assert checker.lang == "en", name
        for control_id, wrapped, aria_label, labelledby in checker.controls:
            assert wrapped or aria_label or labelledby or control_id in checker.labels_for, (name, control_id)
        assert checker.images_without_alt == 0 and checker.positive_tabindex == 0, name


def _transferred(response) -> int:
    """Bytes on the wire for one response: status line, headers and the body as sent."""
    head = f"HTTP/1.1 {response.status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in response.headers.items())
    return len(head.encode()) + 2 + len(response.data)


def test_candidate_pages_load_no_htmx_and_no_admin_assets(client):
    """Defect: candidate pages loaded htmx (92 % of their weight) though they are plain forms and links."""
    pages = _candidate_pages(client)
    agent = make_agent(title="Another role")
    pages["unsubscribe"] = client.get(f"/u/{_candidate(agent, email='u@example.com').token}")
    pages["share closed"] = client.get("/s/not-a-share-token-123")
    pages["wrong link"] = client.get("/i/not-a-token-123")
    for name, response in pages.items():
        checker = _A11y()
        body = response.get_data(as_text=True)
        checker.feed(body)
        assert "htmx" not in body and " hx-" not in body, name
        # One tiny script of our own, on the landing page only: it tells a person from a link scanner.
        scripts = ["/static/js/seen.js"] if name == "landing" else []
        assert body.count("<script") == len(scripts), name
        assert checker.assets == ["/static/css/public.css"] + scripts, (name, checker.assets)


def test_a_candidate_links_first_load_is_at_most_20_kb_with_gzip(client):
    """Defect: the first load of a candidate page was about 56 KB; HTML and CSS now arrive gzipped, under 20 KB."""
    browser = {"Accept-Encoding": "gzip, deflate"}
    for name, page in _candidate_pages(client, browser).items():
        assert page.status_code == 200, name
        checker = _A11y()
        html = gzip.decompress(page.data) if page.headers.get("Content-Encoding") == "gzip" else page.data
        checker.feed(html.decode())
        total, encodings = _transferred(page), [page.headers.get("Content-Encoding")]
        for asset in checker.assets:
            with client.get(asset, headers=browser) as response:
                assert response.status_code == 200, asset
                total += _transferred(response)
                encodings.append(response.headers.get("Content-Encoding"))
                if encodings[-1] == "gzip":
                    assert gzip.decompress(response.data) == (ROOT / asset.lstrip("/")).read_bytes(), asset
        assert total <= 20 * 1024, (name, total)
        assert encodings == ["gzip"] * len(encodings), (name, encodings)


def test_pages_are_gzipped_only_for_clients_that_accept_it(client):
    c = _candidate()
    url = f"/i/{c.token}"
    plain = client.get(url)
    zipped = client.get(url, headers={"Accept-Encoding": "gzip"})
    refused = client.get(url, headers={"Accept-Encoding": "gzip;q=0, identity"})
    assert "Content-Encoding" not in plain.headers and "Accept-Encoding" in plain.headers["Vary"]
    assert "Content-Encoding" not in refused.headers
    assert zipped.headers["Content-Encoding"] == "gzip" and len(zipped.data) < len(plain.data)
    assert "Interview:" in gzip.decompress(zipped.data).decode()
    # A form sent back with its errors is a whole page too.
    refused_form = client.post(f"/i/{c.token}/start", {"name": ""}, headers={"Accept-Encoding": "gzip"})
    assert refused_form.status_code == 422 and refused_form.headers["Content-Encoding"] == "gzip"
    assert "Please enter your name." in gzip.decompress(refused_form.data).decode()
    with client.get("/static/css/public.css", headers={"Accept-Encoding": "gzip"}) as css:
        etag = css.headers["ETag"]
    # The gzipped file has its own validator, and a cache revalidating with it gets a 304.
    with client.get("/static/css/public.css", headers={"Accept-Encoding": "gzip", "If-None-Match": etag}) as again:
        assert etag.endswith('-gzip"') and again.status_code == 304 and again.data == b""


def test_public_pages_are_not_cached(client):
    c = _candidate()
    assert client.get(f"/i/{c.token}").headers["Cache-Control"] == "no-store"


def test_the_share_page_for_a_known_address_reveals_nothing_about_the_person(client):
    """Defect: the share link said "You are already registered" (who applied), and said it
    differently when the link had been sent a moment ago."""
    agent = make_agent()
    _candidate(agent, stage=Stage.STARTED)
    form = {"name": "Someone", "email": "ada@example.com", "phone": ""}
    first = client.post(f"/s/{agent.share_token}", form).get_data(as_text=True)
    again = client.post(f"/s/{agent.share_token}", form).get_data(as_text=True)
    assert "already registered" not in first.lower()
    strip = lambda page: re.sub(r'value="[^"]*"', "", page)  # noqa: E731 (the CSRF token differs)
    assert strip(first) == strip(again)


def test_a_newcomer_starts_at_once_and_their_link_goes_to_the_address_they_typed(client):
    agent = make_agent()
    r = client.post(f"/s/{agent.share_token}", {"name": "Grace Hopper", "email": "grace@example.com", "phone": ""})
    c = db.session.query(Candidate).one()
    assert r.headers["Location"] == f"/i/{c.token}/q/1"
    sent = db.session.query(Message).one()
    assert (sent.kind, sent.channel, sent.candidate_id, sent.immediate) == ("link_resend", "email", c.id, True)


def test_share_sign_ups_are_limited_per_client_address(client):
    """Defect: 60 registrations with other people's addresses from one client took a second."""
    agent = make_agent()
    codes = [client.post(f"/s/{agent.share_token}", {"name": f"P {i}", "email": f"p{i}@example.com", "phone": ""}).status_code
             for i in range(11)]
    assert codes[:10] == [302] * 10 and codes[10] == 429
    assert db.session.query(Candidate).count() == 10
    other = client.post(f"/s/{agent.share_token}", {"name": "Q", "email": "q@example.com", "phone": ""},
                        environ_base={"REMOTE_ADDR": "10.9.8.7"})
    assert other.status_code == 302  # someone else, elsewhere, is not held up


def test_share_sign_ups_are_limited_per_e_mail_address(client):
    agent = make_agent()
    form = {"name": "Ada", "email": "ada@example.com", "phone": ""}
    codes = [client.post(f"/s/{agent.share_token}", form, environ_base={"REMOTE_ADDR": f"10.0.0.{i}"}).status_code
             for i in range(4)]
    assert codes[3] == 429
    page = client.post(f"/s/{agent.share_token}", form, environ_base={"REMOTE_ADDR": "10.0.1.1"})
    assert page.status_code == 429 and "Too many sign-ups" in page.get_data(as_text=True)


def test_share_sign_ups_are_limited_per_share_link(client):
    agent = make_agent()
    codes = [client.post(f"/s/{agent.share_token}", {"name": f"P {i}", "email": f"p{i}@example.com", "phone": ""},
                         environ_base={"REMOTE_ADDR": f"10.1.{i // 200}.{i % 200}"}).status_code for i in range(31)]
    assert codes.count(429) == 1 and codes[-1] == 429



# --- people, not link scanners -------------------------------------------------------------

def _reminders_due(c, at_time):
    from milo_portal.followups.services import plan

    plan(db.session, at_time)
    return db.session.query(Message).filter_by(candidate_id=c.id, kind="reminder").count()


def test_a_mail_scanners_visit_does_not_count_as_a_click(client, team_settings):
    """Defect: a plain GET right after the invite (Safe Links, Proofpoint, Mimecast) moved the
    candidate to "clicked" and cancelled both "never clicked" reminders."""
    from tests.conftest import at

    sent = at("2026-11-30T10:00:00")
    c = _candidate(stage=Stage.INVITED, invited_at=sent, deadline_at=sent + timedelta(days=7))
    scanner = client.get(f"/i/{c.token}", headers={"User-Agent": "Mozilla/5.0 (compatible; scanner)"})
    assert scanner.status_code == 200
    db.session.refresh(c)
    assert c.stage == Stage.INVITED
    assert _events(c, "visited") == 1 and _events(c, "clicked") == 0
    assert _reminders_due(c, sent + timedelta(hours=25)) == 1  # the reminder still goes


def test_the_landing_page_beacon_counts_the_click_once(client):
    c = _candidate(stage=Stage.INVITED)
    page = client.get(f"/i/{c.token}").get_data(as_text=True)
    assert f'<meta name="milo-seen" content="/i/{c.token}/seen">' in page and "js/seen.js" in page
    for _ in range(2):
        assert client.post(f"/i/{c.token}/seen").status_code == 204
    db.session.refresh(c)
    assert c.stage == Stage.CLICKED and _events(c, "clicked") == 1
    assert client.post("/i/not-a-real-token-at-all/seen").status_code == 404


def test_coming_back_to_the_link_later_counts_as_a_click(client, monkeypatch):
    from milo_portal.public import views

    c = _candidate(stage=Stage.INVITED)
    first = now()
    monkeypatch.setattr(views, "now", lambda: first)
    client.get(f"/i/{c.token}")
    monkeypatch.setattr(views, "now", lambda: first + timedelta(seconds=30))
    client.get(f"/i/{c.token}")  # a scanner's second fetch, seconds later
    db.session.refresh(c)
    assert c.stage == Stage.INVITED
    monkeypatch.setattr(views, "now", lambda: first + timedelta(minutes=5))
    client.get(f"/i/{c.token}")
    db.session.refresh(c)
    assert c.stage == Stage.CLICKED


def test_a_return_visit_records_the_click_exactly_as_the_stage_machine_does(client, monkeypatch):
    """The return visit's two prepared statements write what ``stages.move`` writes for a click:
    the stage and its timestamps, the device class, one "clicked" event, and the webhook
    deliveries (none: other systems hear of starts, not clicks)."""
    from milo_portal.candidates import stages
    from milo_portal.models import WebhookDelivery, WebhookEndpoint
    from milo_portal.public import views
    from milo_portal.public.services import CAME_BACK

    agent = make_agent()
    db.session.add(WebhookEndpoint(url="https://hooks.example.com/milo", secret="s" * 32))
    by_move, by_visit = _candidate(agent, email="move@example.com"), _candidate(agent, email="visit@example.com")
    first = now().replace(microsecond=0)
    monkeypatch.setattr(views, "now", lambda: first)
    client.get(f"/i/{by_visit.token}", headers={"User-Agent": IPHONE})
    later = first + timedelta(minutes=5)
    monkeypatch.setattr(views, "now", lambda: later)
    assert client.get(f"/i/{by_visit.token}", headers={"User-Agent": IPHONE}).status_code == 200
    assert stages.move(db.session, by_move, Stage.CLICKED, later, device_class="mobile", detail=CAME_BACK)
    db.session.commit()
    db.session.expire_all()

    fields = ("stage", "clicked_at", "updated_at", "last_activity_at", "device_class")
    assert [getattr(by_visit, f) for f in fields] == [getattr(by_move, f) for f in fields] \
        == [Stage.CLICKED, later, later, later, "mobile"]
    event_fields = ("type", "at", "channel", "device_class", "detail", "message_id", "actor_id", "agent_id")
    clicks = [[tuple(getattr(e, f) for f in event_fields)
               for e in db.session.query(Event).filter_by(candidate_id=c.id, type="clicked")] for c in (by_visit, by_move)]
    assert clicks[0] == clicks[1] == [("clicked", later, None, "mobile", CAME_BACK, None, None, agent.id)]
    assert db.session.query(WebhookDelivery).count() == 0


def test_a_return_visits_click_stops_the_not_clicked_reminders(client, team_settings, monkeypatch):
    """A reminder queued before the candidate came back is cancelled when due ("Clicked their
    link"), and no later reminder is planned; a third visit records no second click."""
    from milo_portal.followups.services import dispatch
    from milo_portal.public import views
    from tests.conftest import at

    sent = at("2026-11-30T10:00:00")
    c = _candidate(stage=Stage.INVITED, invited_at=sent, deadline_at=sent + timedelta(days=7))
    assert _reminders_due(c, sent + timedelta(hours=25)) == 1  # reminder 1 is in the outbox
    monkeypatch.setattr(views, "now", lambda: sent + timedelta(hours=25))
    client.get(f"/i/{c.token}", headers={"User-Agent": DESKTOP})
    for minutes in (3, 4):
        monkeypatch.setattr(views, "now", lambda: sent + timedelta(hours=25, minutes=minutes))
        client.get(f"/i/{c.token}", headers={"User-Agent": DESKTOP})
    db.session.expire_all()
    assert c.stage == Stage.CLICKED and c.device_class == "desktop"
    assert _events(c, "visited") == 1 and _events(c, "clicked") == 1
    dispatch(db.session, sent + timedelta(hours=26))
    reminder = db.session.query(Message).filter_by(candidate_id=c.id, kind="reminder").one()
    assert reminder.status == "cancelled" and "Clicked their link" in (reminder.last_error or "")
    assert _reminders_due(c, sent + timedelta(hours=49)) == 1  # reminder 2 is never planned


def test_a_stale_return_visit_after_the_candidate_started_records_no_click(client, monkeypatch):
    """The return visit's UPDATE re-checks the stage: if the candidate started in another tab
    between the page's read and its write unit, nothing is recorded."""
    from milo_portal.public import services, views

    c = _candidate(stage=Stage.INVITED)
    first = now()
    monkeypatch.setattr(views, "now", lambda: first)
    client.get(f"/i/{c.token}")
    view, _ = services.view_with_help(db.session, c.token)
    db.session.rollback()
    db.session.query(Candidate).filter_by(id=c.id).update({"stage": Stage.STARTED})
    db.session.commit()
    assert services.visit(db.session, view, first + timedelta(minutes=5), IPHONE) is None
    db.session.expire_all()
    assert c.stage == Stage.STARTED and _events(c, "clicked") == 0


def test_machine_opens_are_recorded_apart_and_move_nothing(client):
    from milo_portal.models import Message as Msg

    c = _candidate(stage=Stage.INVITED)
    m = Msg(candidate_id=c.id, kind="invite", step=1, channel="email", status="sent", scheduled_for=now(),
            sent_at=now() - timedelta(seconds=5))
    db.session.add(m)
    db.session.commit()
    pixel = f"/t/o/{c.token}/{m.id}.gif"
    client.get(pixel, headers={"User-Agent": "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"})
    client.get(pixel, headers={"User-Agent": IPHONE})  # five seconds after delivery: a privacy proxy
    db.session.refresh(c)
    assert c.stage == Stage.INVITED and _events(c, "machine_opened") == 1 and _events(c, "opened") == 0
    m.sent_at = now() - timedelta(hours=2)
    db.session.commit()
    client.get(pixel, headers={"User-Agent": IPHONE})
    db.session.refresh(c)
    assert c.stage == Stage.OPENED and _events(c, "opened") == 1


def test_completing_cancels_what_was_still_queued_for_the_candidate(client):
    """Defect (trial): a completed candidate's queued invite stayed "Scheduled" in the outbox
    until the dispatcher met it. Completing now cancels every queued message at once; a
    message already sent keeps its status."""
    c = _candidate(stage=Stage.STARTED, started_at=now())
    later = now() + timedelta(days=1)
    db.session.add_all([
        Message(candidate_id=c.id, kind="invite", step=1, channel="email", status="sent", scheduled_for=now(), sent_at=now()),
        Message(candidate_id=c.id, kind="nudge", step=1, channel="email", scheduled_for=later),
        Message(candidate_id=c.id, kind="reminder", step=2, channel="sms", scheduled_for=later),
    ])
    db.session.commit()
    for n in (1, 2, 3):
        client.post(f"/i/{c.token}/q/{n}", {"answer": f"Answer {n}"})
    assert client.post(f"/i/{c.token}/submit").status_code == 302
    statuses = {m.kind: (m.status, m.last_error) for m in db.session.query(Message).filter_by(candidate_id=c.id)}
    assert statuses == {"invite": ("sent", None),
                        "nudge": ("cancelled", "Candidate completed the interview"),
                        "reminder": ("cancelled", "Candidate completed the interview")}


def test_the_candidates_pages_set_no_cookie_and_their_forms_need_no_csrf_token(client):
    """The link token is the candidate's only credential: no session cookie, no CSRF token.

    Defect: the share page set a cookie for its CSRF token, and a candidate who blocks
    cookies could not sign up ("Form expired").
    """
    c = _candidate()
    for response in (client.get(f"/i/{c.token}"),
                     client.post(f"/i/{c.token}/start", {"name": "Ada", "email": "ada@example.com"}, csrf=False),
                     client.get(f"/i/{c.token}/q/1"),
                     client.post(f"/i/{c.token}/q/1", {"answer": "One"}, csrf=False)):
        assert response.status_code in (200, 302)
        assert "Set-Cookie" not in response.headers
        assert 'name="csrf_token"' not in response.get_data(as_text=True)
    for n in (2, 3):
        client.post(f"/i/{c.token}/q/{n}", {"answer": f"Answer {n}"}, csrf=False)
    assert client.post(f"/i/{c.token}/submit", csrf=False).headers["Location"] == f"/i/{c.token}/done"
    db.session.refresh(c)
    assert c.stage == Stage.COMPLETED
    agent = c.agent
    page = client.get(f"/s/{agent.share_token}")
    assert "Set-Cookie" not in page.headers and 'name="csrf_token"' not in page.get_data(as_text=True)
    signed_up = client.post(f"/s/{agent.share_token}", {"name": "Eve", "email": "eve@example.com"}, csrf=False)
    assert signed_up.status_code == 302 and "Set-Cookie" not in signed_up.headers
    assert db.session.query(Candidate).filter_by(email="eve@example.com").count() == 1


def test_a_question_page_shows_the_saved_answer_and_an_out_of_range_number_goes_on(client):
    """The question page reads the questions and the candidate's answers as plain rows."""
    c = _candidate(stage=Stage.STARTED)
    client.post(f"/i/{c.token}/q/1", {"answer": "First & <best>"}, csrf=False)
    page = client.get(f"/i/{c.token}/q/1").get_data(as_text=True)
    assert "First &amp; &lt;best&gt;" in page and "Question 1 of 3" in page
    assert client.get(f"/i/{c.token}/q/9").headers["Location"] == f"/i/{c.token}/q/2"
    assert client.get(f"/i/{c.token}").headers["Location"] == f"/i/{c.token}/q/2"


def test_an_answer_that_races_the_interview_closing_is_not_saved(client, monkeypatch):
    """The answer's write unit re-checks that the candidate is still started before it saves."""
    from sqlalchemy import update

    from milo_portal.public import services as public_services

    c = _candidate(stage=Stage.STARTED)
    real = public_services.questions_of

    def closing_meanwhile(session, view):
        rows = real(session, view)
        with db.engine.begin() as conn:  # another request expires the candidate between the read and the write
            conn.execute(update(Candidate).where(Candidate.id == view.id).values(stage=Stage.EXPIRED))
        return rows

    monkeypatch.setattr(public_services, "questions_of", closing_meanwhile)
    r = client.post(f"/i/{c.token}/q/1", {"answer": "Too late"}, csrf=False)
    assert r.status_code == 302 and r.headers["Location"] == f"/i/{c.token}"
    db.session.expire_all()
    assert db.session.query(Answer).filter_by(candidate_id=c.id).count() == 0
    assert _events(c, "answered") == 0


def test_answering_again_replaces_the_answer_and_records_each_answer(client):
    c = _candidate(stage=Stage.STARTED)
    client.post(f"/i/{c.token}/q/2", {"answer": "First"}, csrf=False)
    r = client.post(f"/i/{c.token}/q/2", {"answer": "  Second  "}, csrf=False)
    assert r.headers["Location"] == f"/i/{c.token}/q/1"  # question 1 is still unanswered
    answers = db.session.query(Answer).filter_by(candidate_id=c.id).all()
    assert [(a.position, a.body) for a in answers] == [(2, "Second")]
    assert _events(c, "answered") == 2
    db.session.refresh(c)
    assert c.last_activity_at is not None
