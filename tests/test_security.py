"""Checks every route must pass: login required, POST-only state changes, CSRF, headers."""
from __future__ import annotations

import pytest
from werkzeug.routing import IntegerConverter

from milo_portal import PUBLIC_BLUEPRINTS, PUBLIC_ENDPOINTS, create_app
from milo_portal.config import TestConfig

_app = create_app(TestConfig)


def _sample_url(rule) -> str:
    values = {}
    for arg in rule.arguments:
        converter = rule._converters[arg]
        values[arg] = 1 if isinstance(converter, IntegerConverter) else ("A" if getattr(converter, "regex", "") == "[^/]{1}" else "svg")
    with _app.test_request_context():
        from flask import url_for

        return url_for(rule.endpoint, **values)


def _admin_rules():
    for rule in _app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS or rule.endpoint.split(".")[0] in PUBLIC_BLUEPRINTS:
            continue
        yield rule


ADMIN_GET = sorted({_sample_url(r) for r in _admin_rules() if "GET" in r.methods})
ADMIN_POST = sorted({_sample_url(r) for r in _admin_rules() if "POST" in r.methods})
# POST-only addresses (an address with a GET route of its own, like the uploads list, is a page).
STATE_CHANGING = sorted({_sample_url(r) for r in _admin_rules() if "POST" in r.methods and "GET" not in r.methods}
                        - set(ADMIN_GET))


def test_it_knows_the_admin_routes():
    assert "/agents" in ADMIN_GET and "/team" in ADMIN_GET
    assert "/agents/1/share/rotate" in STATE_CHANGING


@pytest.mark.parametrize("url", ADMIN_GET)
def test_it_sends_anonymous_get_to_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


@pytest.mark.parametrize("url", ADMIN_POST)
def test_it_sends_anonymous_post_to_login(client, url):
    response = client.post(url, csrf=False)
    assert response.status_code in (302, 400)
    if response.status_code == 302:
        assert response.headers["Location"].startswith("/login")


@pytest.mark.parametrize("url", STATE_CHANGING)
def test_it_refuses_get_on_state_changing_routes(auth, client, url):
    assert client.get(url).status_code == 405


# CSRFProtect refuses these itself (the views no longer check an empty form by hand), the
# GET-and-POST pages included.
@pytest.mark.parametrize("url", STATE_CHANGING + ["/login", "/team", "/agents/new", "/account", "/settings",
                                                  "/agents/1/nudge-all", "/candidates/new"])
def test_it_refuses_post_without_csrf_token(auth, client, url):
    response = client.post(url, {"anything": "1"}, csrf=False)
    assert response.status_code == 400
    assert "Form expired" in response.get_data(as_text=True)


def test_it_sends_security_headers(client):
    response = client.get("/login")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_it_has_no_inline_scripts_or_handlers(auth, client):
    from tests.conftest import make_agent

    agent = make_agent()
    for url in ["/agents", f"/agents/{agent.id}", f"/agents/{agent.id}/share", "/team", "/account", "/agents/new"]:
        body = client.get(url).get_data(as_text=True)
        assert "<script>" not in body and "<script >" not in body
        for handler in ("onclick=", "onload=", "onsubmit=", "onchange=", "javascript:"):
            assert handler not in body.lower(), (url, handler)


def test_it_puts_the_csrf_token_in_hx_headers(auth, client):
    body = client.get("/agents").get_data(as_text=True)
    assert '<body hx-headers=\'{"X-CSRFToken": "' in body


def test_htmx_post_with_header_token_is_accepted(auth, client):
    from tests.conftest import make_agent

    agent = make_agent()
    token = client.csrf_token()
    response = client.post(f"/agents/{agent.id}/questions", {"text": "Q4?"}, csrf=False,
                           headers={"HX-Request": "true", "X-CSRFToken": token})
    assert response.status_code == 200


def test_session_cookie_is_httponly_and_lax(user, client):
    client.post("/login", {"email": user.email, "password": "correct-horse-battery"})
    cookie = client.get_cookie("milo_session")
    assert cookie is not None and cookie.http_only and cookie.same_site == "Lax"


def test_unknown_page_is_a_styled_404(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404
    assert "Not found" in response.get_data(as_text=True)


def test_a_crash_shows_a_page_not_a_traceback(app, auth, client, monkeypatch):
    from milo_portal.agents import services

    def boom(*a, **k):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(services, "list_agents", boom)
    response = client.get("/agents")
    body = response.get_data(as_text=True)
    assert response.status_code == 500
    assert "Something went wrong" in body and "secret internals" not in body and "Traceback" not in body


def test_too_large_upload_is_a_413_page(app, auth, client):
    app.config["MAX_CONTENT_LENGTH"] = 1000
    response = client.post("/team", {"name": "x" * 5000})
    assert response.status_code == 413
    assert "Too large" in response.get_data(as_text=True)


def test_healthz_is_public(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json["status"] == "ok" and response.json["database"] == "ok"


def test_an_htmx_request_without_a_session_is_sent_to_login_as_a_whole_page(client):
    response = client.get("/agents/1/share", headers={"HX-Request": "true"})
    assert response.status_code == 200 and response.headers["HX-Redirect"].startswith("/login?next=")


def test_an_htmx_post_with_a_stale_token_reloads_the_page(auth, client):
    response = client.post("/agents/1/questions", {"text": "x"}, csrf=False, headers={"HX-Request": "true"})
    assert response.status_code == 400 and response.headers["HX-Refresh"] == "true"


@pytest.mark.parametrize("back", ["https://evil.example", "//evil.example/outbox", "/\\evil.example",
                                  "/\t/evil.example", "javascript:alert(1)"])
def test_an_outbox_action_never_redirects_off_the_site(auth, client, back):
    """Defect: POST /outbox/<id>/<action> redirected to any ``back=`` (an open redirect)."""
    from tests.conftest import at, make_due_invites

    make_due_invites(1, at("2026-12-01T09:00:00"))
    response = client.post("/outbox/1/cancel", {"back": back})
    assert response.status_code == 302
    assert response.headers["Location"] == "/outbox?status=scheduled"


def test_an_outbox_action_returns_to_the_page_it_came_from(auth, client):
    from tests.conftest import at, make_due_invites

    make_due_invites(1, at("2026-12-01T09:00:00"))
    response = client.post("/outbox/1/cancel", {"back": "/outbox?status=scheduled&page=2"})
    assert response.headers["Location"] == "/outbox?status=scheduled&page=2"


# --- hostile requests: a clean 4xx, never a 500, and nothing written ---------------------------

BOOKKEEPING = {"login_attempt", "rate_hit", "user_session", "audit_entry"}


def database_state() -> tuple:
    """A cheap fingerprint of everything a request can change.

    Every table's row count (but the bookkeeping that records refused requests on purpose:
    login attempts, rate-limit hits, and the session a login in the same test opens and
    its audit entry),
    the latest candidate update (any change to a candidate bumps updated_at), the messages
    by status with their attempts, provider ids and errors, and the answers' total length
    and latest time. Two queries, so it can run around every fuzzed request.
    """
    from sqlalchemy import text

    from milo_portal.extensions import db

    db.session.commit()
    tables = [t.name for t in db.metadata.sorted_tables if t.name not in BOOKKEEPING]
    totals = db.session.execute(text("SELECT " + ", ".join(
        [f'(SELECT count(*) FROM "{t}")' for t in tables]
        + ["(SELECT max(updated_at) FROM candidate)", "(SELECT sum(length(body)) FROM answer)",
           "(SELECT max(answered_at) FROM answer)"]))).one()
    messages = db.session.execute(text(
        "SELECT status, count(*), sum(attempts), count(provider_id), count(last_error), count(sent_at) "
        "FROM message GROUP BY status ORDER BY status")).all()
    db.session.commit()
    return tuple(totals), tuple(map(tuple, messages))


def _started_candidate():
    from datetime import timedelta

    from milo_portal.clock import now
    from milo_portal.extensions import db
    from milo_portal.models import Candidate, Stage
    from tests.conftest import make_agent

    c = Candidate(agent_id=make_agent().id, name="Ada", email="ada@example.com", phone="+14155550100",
                  timezone="UTC", stage=Stage.STARTED, deadline_at=now() + timedelta(days=5))
    db.session.add(c)
    db.session.commit()
    return c


def _twilio_post(app, client, path, form):
    from twilio.request_validator import RequestValidator

    app.config["TWILIO_AUTH_TOKEN"] = "twilio-auth-token"
    signature = RequestValidator("twilio-auth-token").compute_signature(app.config["MILO_PUBLIC_BASE_URL"] + path, form)
    return client.post(path, form, csrf=False, headers={"X-Twilio-Signature": signature})


NUL_REQUESTS = {
    "share-page name": lambda app, client, c: client.post(f"/s/{c.agent.share_token}",
                                                          {"name": "Eve\x00", "email": "eve@example.com"}),
    "answer": lambda app, client, c: client.post(f"/i/{c.token}/q/1", {"answer": "I\x00like it"}),
    "name on the candidate link": lambda app, client, c: client.post(
        f"/i/{c.token}/start", {"name": "Ada\x00", "email": "ada@example.com"}),
    "Twilio From": lambda app, client, c: _twilio_post(
        app, client, "/hooks/twilio/inbound", {"MessageSid": "SM1", "From": "+1415\x00", "Body": "STOP"}),
    "login e-mail": lambda app, client, c: client.post("/login", {"email": "rita\x00@example.com", "password": "x"}),
    "admin search": lambda app, client, c: (client.post("/login", {"email": "rita@example.com",
                                                                   "password": "correct-horse-battery"}),
                                            client.get("/candidates?q=Ada%00"))[1],
    "token in the path": lambda app, client, c: client.get("/i/abc%00def"),
}


@pytest.mark.parametrize("name", NUL_REQUESTS)
def test_nul_bytes_and_lone_surrogates_are_a_400_that_writes_nothing(app, client, user, name):
    """Defect: on PostgreSQL a NUL byte in these fields reached the database: a 500."""
    c = _started_candidate()
    before = database_state()
    response = NUL_REQUESTS[name](app, client, c)
    assert response.status_code == 400
    assert "cannot be stored" in response.get_data(as_text=True)
    assert database_state() == before


@pytest.mark.parametrize("kwargs", [
    {"json": {"MessageSid": "SM\ud800"}},
    {"json": {"MessageSid": ["SM1", {"From\x00": 1}]}},
    {"data": {"file": (__import__("io").BytesIO(b"x"), "cv\x00.pdf")}},
])
def test_json_strings_and_file_names_with_unstorable_characters_are_a_400(app, client, kwargs):
    before = database_state()
    response = client.open("/hooks/twilio/inbound", method="POST", **kwargs)
    assert response.status_code == 400 and "cannot be stored" in response.get_data(as_text=True)
    assert database_state() == before


@pytest.mark.parametrize("path", [
    "/t/o/{token}/99999999999999999999999.gif",
    "/t/o/{token}/2147483648.gif",
    "/i/{token}/q/99999999999999999999999",
    pytest.param("/t/o/{token}/" + "9" * 5000 + ".gif", id="5000-digit id"),
])
def test_a_number_in_a_public_path_too_big_for_the_database_is_a_404(client, path):
    """Defect: /t/o/<token>/<huge>.gif reached the database with an out-of-range id: a 500."""
    c = _started_candidate()
    response = client.get(path.format(token=c.token))
    assert response.status_code == 404
    assert response.headers["Cache-Control"] == "no-store"


def test_the_largest_id_the_database_holds_is_a_plain_miss(client):
    c = _started_candidate()
    response = client.get(f"/t/o/{c.token}/2147483647.gif")
    assert response.status_code == 200 and response.mimetype == "image/gif"


@pytest.mark.parametrize("path", [
    "/candidates/99999999999999999999999", "/candidates/99999999999999999999999/invite", "/candidates/2147483648",
    "/agents/99999999999999999999999", "/agents/1/questions/99999999999999999999999/edit",
    "/candidates/٣", "/candidates/²",
])
def test_an_admin_id_too_big_for_the_database_or_not_ascii_is_a_404(auth, client, path):
    """Defect: /candidates/<huge id> reached the database: a 500."""
    assert client.get(path).status_code in (404, 405)


@pytest.mark.parametrize("query", [
    "page=99999999999999999999999", "agent_id=99999999999999999999999", "ids=%C2%B2", "ids=1&ids=%C2%B2",
    "page=%C2%B2", "agent_id=%D9%A3", "page=-1", "page=1e9", "ids=2147483648", "agent_id=2147483648",
])
def test_admin_list_filters_ignore_numbers_they_cannot_use(auth, client, query):
    """Defect: ?page=<huge>, ?agent_id=<huge> and ?ids=² crashed the candidates list: a 500."""
    _started_candidate()
    for path in ("/candidates", "/outbox", "/candidates/export.csv", "/candidates/uploads/new", "/candidates/new"):
        response = client.get(f"{path}?{query}")
        assert response.status_code == 200, (path, response.status_code)


def test_list_filters_still_read_plain_numbers(auth, client):
    from tests.conftest import make_agent

    agent = make_agent("Night nurse")
    body = client.get(f"/candidates?agent_id={agent.id}&page=2").get_data(as_text=True)
    assert "Night nurse" in body


def raw_request(app, method: str, path: str, headers: dict) -> tuple[int, dict, bytes]:
    """Call the app as a WSGI server would, without the test client.

    Werkzeug's test client rebuilds the request URL after each call (for its cookie jar)
    and crashes itself on a Host it cannot IDNA-decode, whatever the app answered.
    """
    from werkzeug.test import EnvironBuilder, run_wsgi_app

    from milo_portal.extensions import db

    db.session.commit()
    environ = EnvironBuilder(path=path, method=method, headers=headers).get_environ()
    with app.app_context():
        body, status, response_headers = run_wsgi_app(app, environ, buffered=True)
        data = b"".join(body)
    return int(status.split()[0]), dict(response_headers), data


@pytest.mark.parametrize("method,path", [
    ("GET", "/healthz"), ("GET", "/login"), ("POST", "/login"), ("GET", "/i/whatever"), ("GET", "/candidates"),
    ("GET", "/no-such-page"), ("PUT", "/healthz"), ("POST", "/hooks/twilio/inbound"), ("GET", "/static/css/app.css"),
])
@pytest.mark.parametrize("host", ["a" * 64 + ".example.com", "a..b", ".example.com", "xn--", "xn--a.example.com"])
def test_a_host_header_that_is_not_a_valid_name_is_a_400_on_every_route(app, method, path, host):
    """Defect: a Host with a label over 63 characters gave a 500 everywhere (the error page crashed too);
    one that encodes but does not decode ("xn--") crashed request.url, read on the way to the login page."""
    status, headers, body = raw_request(app, method, path, {"Host": host})
    assert status == 400
    assert b"invalid Host" in body


def test_an_ordinary_host_still_gets_its_page(app):
    assert raw_request(app, "GET", "/login", {"Host": "portal.example.com:8443"})[0] == 200


def test_a_non_ascii_remember_cookie_counts_as_no_cookie(user, client):
    """Defect: Cookie: remember_token=abc|é made Flask-Login's digest check raise: a 500."""
    client.set_cookie("remember_token", "abc|é")
    response = client.get("/candidates")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    assert client.get_cookie("remember_token") is None  # deleted, so the browser stops sending it
    client.set_cookie("remember_token", "1|é")
    assert client.get("/login").status_code == 200


def test_a_non_ascii_remember_cookie_on_a_refused_post_gets_the_form_expired_page(user, client):
    """Defect (found by the fuzz test): the CSRF error page loads the user before any view does."""
    client.set_cookie("remember_token", "abc|é")
    response = client.post("/account", {"name": "x"}, csrf=False)
    assert response.status_code == 400 and "Form expired" in response.get_data(as_text=True)


def test_a_remember_cookie_still_logs_in(user, client):
    client.post("/login", {"email": user.email, "password": "correct-horse-battery", "remember": "y"})
    remember = client.get_cookie("remember_token")
    assert remember is not None
    client.delete_cookie("milo_session")
    assert client.get("/candidates").status_code == 200


@pytest.mark.parametrize("method,path", [
    ("PUT", "/i/{token}"), ("DELETE", "/s/{share}"), ("POST", "/t/o/{token}/1.gif"), ("PATCH", "/u/{token}"),
    ("GET", "/i/{token}/nope"), ("GET", "/i/not-a-token"), ("GET", "/s/not-a-token"), ("GET", "/u/not-a-token"),
    ("GET", "/hooks/twilio/inbound"),
])
def test_error_responses_on_public_addresses_are_never_cached(client, method, path):
    """Defect: a 405 (or 404 without an endpoint) on /i/ came without Cache-Control: no-store."""
    c = _started_candidate()
    response = client.open(path.format(token=c.token, share=c.agent.share_token), method=method)
    assert 400 <= response.status_code < 500
    assert response.headers["Cache-Control"] == "no-store"
