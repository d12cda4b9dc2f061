"""The JSON API under /api/v1/: keys, creating candidates with their link back, idempotency,
errors as problem+json, the per-key rate limit, and the OpenAPI document checked against
every route's real responses."""
from __future__ import annotations

import json
import re

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi

from milo_portal.api import services as keys
from milo_portal.api.openapi import document
from milo_portal.clock import now
from milo_portal.extensions import db
from milo_portal.models import ApiKey, Candidate, Message, Stage
from tests.conftest import make_agent

DOC = document("https://jobs.example.test/api/v1")
SEEN: set[tuple[str, str, str]] = set()


def _operation(path: str, method: str) -> tuple[str, dict]:
    for template, ops in DOC["paths"].items():
        pattern = "^/api/v1" + re.sub(r"\{[^}]+\}", r"[^/]+", template) + "$"
        if re.match(pattern, path.split("?")[0]) and method.lower() in ops:
            return template, ops[method.lower()]
    raise AssertionError(f"{method} {path} is not in the OpenAPI document")


def conforms(response, path: str, method: str) -> None:
    """Check one real response against the document: documented status, media type and schema."""
    template, op = _operation(path, method)
    spec = op["responses"].get(str(response.status_code))
    assert spec is not None, f"{method} {template}: status {response.status_code} is not documented"
    media = response.mimetype
    assert media in spec["content"], f"{method} {template} {response.status_code}: {media} is not documented"
    schema = {**spec["content"][media]["schema"], "components": DOC["components"]}
    Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(response.get_json())
    for header in spec.get("headers", {}):
        assert header in response.headers, f"{method} {template} {response.status_code}: no {header} header"
    SEEN.add((template, method.lower(), str(response.status_code)))


@pytest.fixture()
def api(app, client):
    """Call the API with a live key (or the headers given); every response is checked against the document."""
    key, raw = keys.create_key(db.session, "Test system", now(), None)
    db.session.commit()

    def call(method: str, path: str, body=None, headers=None, key_header: str | None = raw, check: bool = True):
        sent = dict(headers or {})
        if key_header is not None:
            sent.setdefault("Authorization", f"Bearer {key_header}")
        kwargs = {"json": body} if body is not None else {}
        response = client.open(path, method=method, headers=sent, **kwargs)
        assert response.mimetype in ("application/json", "application/problem+json"), response.get_data(as_text=True)
        if check:
            conforms(response, path, method)
        return response

    call.key_id, call.raw = key.id, raw
    return call


def test_the_openapi_document_is_valid_openapi_3_1(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    spec = response.get_json()
    assert spec["openapi"] == "3.1.0" and spec["servers"] == [{"url": "https://jobs.example.test/api/v1"}]
    validate_openapi(spec)


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer milo_nothing_here", "Basic dXNlcjpwYXNz",
                                    "Bearer milo_00000000_wrong"])
def test_a_missing_or_wrong_key_is_401_json(api, header):
    make_agent()
    response = api("GET", "/api/v1/agents", key_header=header)
    assert response.status_code == 401 and response.mimetype == "application/problem+json"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Set-Cookie" not in response.headers


def test_a_key_with_the_right_prefix_and_a_wrong_secret_is_401(api):
    prefix = api.raw.split("_")[1]
    assert api("GET", "/api/v1/agents", key_header=f"milo_{prefix}_not-the-secret").status_code == 401


def test_a_revoked_key_is_401_at_once(api, auth, client):
    assert api("GET", "/api/v1/agents").status_code == 200
    assert client.post(f"/settings/api-keys/{api.key_id}/revoke").status_code == 302
    response = api("GET", "/api/v1/agents")
    assert response.status_code == 401 and response.get_json()["title"] == "Unauthorized"


def test_agents_are_listed_with_their_share_link(api):
    agent = make_agent("Barista")
    make_agent("Old one", archived_at=now())
    data = api("GET", "/api/v1/agents").get_json()["data"]
    assert data == [{"id": agent.id, "title": "Barista",
                     "share_link": f"https://jobs.example.test/s/{agent.share_token}"}]


def test_creating_a_candidate_returns_their_unique_link_and_queues_the_invite(api):
    agent = make_agent()
    response = api("POST", f"/api/v1/agents/{agent.id}/candidates",
                   {"name": "Ada Lovelace", "email": " Ada@Example.com ", "source_detail": "careers-site"})
    assert response.status_code == 201
    body = response.get_json()
    c = db.session.get(Candidate, body["id"])
    assert body["link"] == f"https://jobs.example.test/i/{c.token}" and body["created"] is True
    assert (c.email, c.source, c.source_detail, c.stage) == ("ada@example.com", "api", "careers-site", Stage.ADDED)
    assert response.headers["Location"] == f"/api/v1/candidates/{c.id}"
    assert [(m.kind, m.channel) for m in db.session.query(Message)] == [("invite", "email")]


def test_the_same_person_again_is_200_with_the_existing_candidate(api):
    agent = make_agent()
    first = api("POST", f"/api/v1/agents/{agent.id}/candidates", {"name": "Ada", "email": "ada@example.com"})
    again = api("POST", f"/api/v1/agents/{agent.id}/candidates", {"name": "Ada L.", "email": "ADA@example.com"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json()["id"] == first.get_json()["id"] and again.get_json()["created"] is False
    assert db.session.query(Candidate).count() == 1 and db.session.query(Message).count() == 1


def test_an_external_id_finds_the_same_candidate_even_with_another_address(api):
    agent = make_agent()
    first = api("POST", f"/api/v1/agents/{agent.id}/candidates", {"email": "a@example.com", "external_id": "crm-7"})
    again = api("POST", f"/api/v1/agents/{agent.id}/candidates", {"email": "b@example.com", "external_id": "crm-7"})
    assert again.status_code == 200 and again.get_json()["id"] == first.get_json()["id"]


def test_invite_false_adds_without_queueing_and_the_phone_gives_the_time_zone(api):
    agent = make_agent()
    response = api("POST", f"/api/v1/agents/{agent.id}/candidates",
                   {"name": "Sam", "phone": "+1 212 555 0100", "channel": "sms", "invite": False})
    body = response.get_json()
    assert response.status_code == 201 and body["phone"] == "+12125550100"
    assert body["timezone"] == "America/New_York" and db.session.query(Message).count() == 0


def test_validation_errors_name_each_field(api):
    agent = make_agent()
    response = api("POST", f"/api/v1/agents/{agent.id}/candidates",
                   {"email": "not an address", "phone": "12", "channel": "sms", "timezone": "Mars/Base"})
    assert response.status_code == 422 and response.mimetype == "application/problem+json"
    assert set(response.get_json()["errors"]) == {"email", "phone", "timezone"}
    response = api("POST", f"/api/v1/agents/{agent.id}/candidates", {"emial": "x@example.com", "invite": "yes"})
    assert response.get_json()["errors"] == {"emial": "Unknown field.", "invite": "Must be true or false."}
    response = api("POST", f"/api/v1/agents/{agent.id}/candidates", {"name": "Nobody"})
    assert "email" in response.get_json()["errors"]
    assert db.session.query(Candidate).count() == 0


def test_a_body_that_is_not_a_json_object_is_a_422_naming_the_body(api, client):
    agent = make_agent()
    response = client.open(f"/api/v1/agents/{agent.id}/candidates", method="POST", data="[1, 2",
                           headers={"Authorization": f"Bearer {api.raw}", "Content-Type": "application/json"})
    conforms(response, f"/api/v1/agents/{agent.id}/candidates", "POST")
    assert response.status_code == 422 and "body" in response.get_json()["errors"]


def test_the_same_idempotency_key_and_body_gives_the_same_response(api):
    agent = make_agent()
    body = {"name": "Ada", "email": "ada@example.com"}
    first = api("POST", f"/api/v1/agents/{agent.id}/candidates", body, headers={"Idempotency-Key": "k-1"})
    # The candidate moves on meanwhile: the replay is still the first response, word for word.
    db.session.query(Candidate).update({"stage": Stage.INVITED})
    second = api("POST", f"/api/v1/agents/{agent.id}/candidates", body, headers={"Idempotency-Key": "k-1"})
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.get_data() == first.get_data() and second.headers["Idempotent-Replayed"] == "true"
    assert db.session.query(Candidate).count() == 1


def test_the_same_idempotency_key_with_another_body_is_422(api):
    agent = make_agent()
    api("POST", f"/api/v1/agents/{agent.id}/candidates", {"email": "ada@example.com"}, headers={"Idempotency-Key": "k"})
    other = api("POST", f"/api/v1/agents/{agent.id}/candidates", {"email": "bob@example.com"},
                headers={"Idempotency-Key": "k"})
    assert other.status_code == 422 and "Idempotency-Key" in other.get_json()["errors"]
    assert db.session.query(Candidate).count() == 1


def test_a_candidate_is_read_with_stage_timestamps_and_events(api):
    agent = make_agent()
    created = api("POST", f"/api/v1/agents/{agent.id}/candidates", {"email": "ada@example.com"}).get_json()
    body = api("GET", f"/api/v1/candidates/{created['id']}").get_json()
    assert body["stage"] == "added" and body["link"] == created["link"]
    assert [e["type"] for e in body["events"]] == ["added"]
    assert api("GET", "/api/v1/candidates/999999").status_code == 404


def test_candidates_changed_since_a_moment_come_in_cursor_pages(api):
    agent = make_agent()
    ids = [api("POST", f"/api/v1/agents/{agent.id}/candidates", {"email": f"p{i}@example.com"}).get_json()["id"]
           for i in range(5)]
    seen, cursor = [], None
    while True:
        page = api("GET", f"/api/v1/agents/{agent.id}/candidates?since=2000-01-01T00:00:00Z&limit=2"
                   + (f"&cursor={cursor}" if cursor else "")).get_json()
        seen += [c["id"] for c in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    later = api("GET", f"/api/v1/agents/{agent.id}/candidates?since=2999-01-01T00:00:00Z").get_json()
    assert later == {"data": [], "next_cursor": None}
    bad = api("GET", f"/api/v1/agents/{agent.id}/candidates?since=yesterday&limit=0&cursor=%%%")
    assert bad.status_code == 422 and set(bad.get_json()["errors"]) == {"since", "limit", "cursor"}
    assert api("GET", "/api/v1/agents/424242/candidates").status_code == 404
    assert api("POST", "/api/v1/agents/424242/candidates", {"email": "x@example.com"}).status_code == 404


def test_since_with_an_offset_is_read_whether_or_not_its_plus_was_url_encoded(api):
    agent = make_agent()
    api("POST", f"/api/v1/agents/{agent.id}/candidates", {"email": "ada@example.com"})
    for since in ("2000-01-01T01:00:00%2B01:00", "2000-01-01T01:00:00+01:00"):  # "+" unencoded is a space
        page = api("GET", f"/api/v1/agents/{agent.id}/candidates?since={since}")
        assert page.status_code == 200 and len(page.get_json()["data"]) == 1, since
    later = api("GET", f"/api/v1/agents/{agent.id}/candidates?since=2999-01-01T00:00:00+01:00").get_json()
    assert later["data"] == []

def test_each_key_has_a_rate_limit_with_retry_after(app, api):
    app.config["MILO_API_RATE_PER_MINUTE"] = 3
    for _ in range(3):
        assert api("GET", "/api/v1/agents").status_code == 200
    limited = api("GET", "/api/v1/agents")
    assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60
    # Another key has its own budget.
    _key, other = keys.create_key(db.session, "Other", now(), None)
    db.session.commit()
    assert api("GET", "/api/v1/agents", key_header=other).status_code == 200


def test_errors_under_the_api_are_json_never_an_html_page(api, client):
    for method, path in (("GET", "/api/v1/nothing-here"), ("DELETE", "/api/v1/agents"), ("PUT", "/api/v1/openapi.json")):
        response = client.open(path, method=method, headers={"Authorization": f"Bearer {api.raw}"})
        assert response.mimetype == "application/problem+json", (method, path)
        assert response.get_json()["status"] == response.status_code in (404, 405)


def test_last_used_is_recorded_and_the_keys_page_shows_a_new_key_once(auth, client, api):
    api("GET", "/api/v1/agents")
    assert db.session.get(ApiKey, api.key_id).last_used_at is not None
    created = client.post("/settings/api-keys/new", {"name": "Zapier"})
    assert created.status_code == 303 and created.headers["Location"].endswith("/settings/api-keys")
    assert "milo_" not in created.get_data(as_text=True)  # the key is on the page the redirect leads to
    shown = client.get("/settings/api-keys")
    page = shown.get_data(as_text=True)
    raw = re.search(r'value="(milo_[0-9a-f]{8}_[^"]+)"', page).group(1)
    assert shown.headers["Cache-Control"] == "no-store"
    stored = db.session.query(ApiKey).filter_by(name="Zapier").one()
    assert raw not in json.dumps([stored.key_hash, stored.prefix]) and stored.key_hash != raw
    assert raw not in client.get("/settings/api-keys").get_data(as_text=True)  # shown once
    assert api("GET", "/api/v1/agents", key_header=raw).status_code == 200
    assert client.post("/settings/api-keys/new", {"name": ""}).status_code == 422
    assert client.get(f"/settings/api-keys/{stored.id}/revoke").status_code == 405
    client.post(f"/settings/api-keys/{stored.id}/revoke")
    from milo_portal.models import AuditEntry

    details = [e.detail for e in db.session.query(AuditEntry).filter_by(kind="api_key").order_by(AuditEntry.id)]
    assert details == [f"key {stored.prefix} (Zapier) created", f"key {stored.prefix} (Zapier) revoked"]
    assert not any(raw in d for d in details)


def test_every_route_refuses_without_a_key_and_beyond_the_rate(app, api):
    agent = make_agent()
    created = api("POST", f"/api/v1/agents/{agent.id}/candidates", {"email": "ada@example.com"}).get_json()
    routes = [("GET", "/api/v1/agents", None), ("GET", f"/api/v1/agents/{agent.id}/candidates", None),
              ("POST", f"/api/v1/agents/{agent.id}/candidates", {"email": "bob@example.com"}),
              ("GET", f"/api/v1/candidates/{created['id']}", None)]
    for method, path, body in routes:
        assert api(method, path, body, key_header=None).status_code == 401
    app.config["MILO_API_RATE_PER_MINUTE"] = 1  # the POST above used it up
    for method, path, body in routes:
        assert api(method, path, body).status_code == 429
    assert db.session.query(Candidate).count() == 1


def test_every_documented_response_was_produced_by_the_tests_above():
    """Runs last in this file: each documented (path, method, status) matched a real response."""
    documented = {(path, method, status) for path, ops in DOC["paths"].items() for method, op in ops.items()
                  for status in op["responses"]}
    assert documented - SEEN == set()


def test_reloading_the_page_after_creating_a_key_shows_no_key_and_creates_none(auth, client):
    """Post, redirect, get: the key shows on the first GET only, and a reload makes no second key."""
    created = client.post("/settings/api-keys/new", {"name": "Zapier"})
    assert created.status_code == 303
    first = client.get(created.headers["Location"]).get_data(as_text=True)
    again = client.get(created.headers["Location"]).get_data(as_text=True)
    raw = re.search(r'value="(milo_[0-9a-f]{8}_[^"]+)"', first).group(1)
    assert raw not in again and "shown this once" not in again.lower()
    assert db.session.query(ApiKey).filter_by(name="Zapier").count() == 1
    # Kept with the login that made it, not in the cookie, and gone once shown.
    from milo_portal.models import UserSession

    assert all(row.shown_once is None for row in db.session.query(UserSession))
