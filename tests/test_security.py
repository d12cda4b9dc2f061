"""Checks every route must pass: login required, POST-only state changes, CSRF, headers."""
from __future__ import annotations

import pytest

from milo_portal import PUBLIC_BLUEPRINTS, PUBLIC_ENDPOINTS, create_app
from milo_portal.config import TestConfig

_app = create_app(TestConfig)


def _sample_url(rule) -> str:
    values = {}
    for arg in rule.arguments:
        converter = rule._converters[arg]
        name = type(converter).__name__
        values[arg] = 1 if name == "IntegerConverter" else ("A" if getattr(converter, "regex", "") == "[^/]{1}" else "svg")
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
STATE_CHANGING = sorted({_sample_url(r) for r in _admin_rules() if "POST" in r.methods and "GET" not in r.methods})


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


@pytest.mark.parametrize("url", STATE_CHANGING + ["/login", "/team", "/agents/new", "/account"])
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
    assert response.status_code == 200 and response.json == {"status": "ok"}


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
