"""Outbound candidate events: signed deliveries from an outbox to a real HTTP server on
loopback — verified independently, retried while it is down and delivered exactly once by
two dispatching processes, given up after 24 h, resent; SSRF and redirect rules; and the
end-to-end path from a Greenhouse post to candidate.completed."""
from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from milo_portal.candidates import services as candidates
from milo_portal.candidates import stages
from milo_portal.clock import now
from milo_portal.errors import DomainError
from milo_portal.extensions import db
from milo_portal.integrations import outbound, services
from milo_portal.models import Candidate, Stage, WebhookDelivery, WebhookDeliveryStatus, WebhookEndpoint
from tests.conftest import at, make_agent
from tests.servers import SilentServer, free_port

ROOT = Path(__file__).resolve().parent.parent
T = at("2026-11-30T10:00:00")


class EventSink:
    """An HTTP server that keeps every POST (headers and raw body) and answers ``status``."""

    def __init__(self, port: int | None = None, status: int = 200, location: str | None = None) -> None:
        self.received: list[tuple[str, dict, bytes]] = []
        self.status, self.location = status, location
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sink.received.append((self.path, dict(self.headers), body))
                self.send_response(sink.status)
                if sink.location:
                    self.send_header("Location", sink.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port or 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "EventSink":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def events(self) -> list[dict]:
        return [json.loads(body) for _path, _headers, body in self.received]


def verify(secret: str, headers: dict, body: bytes) -> int:
    """Check X-Milo-Signature as a receiver would, with nothing from the app; return its timestamp."""
    parts = dict(item.split("=", 1) for item in headers["X-Milo-Signature"].split(","))
    expected = hmac.new(secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, parts["v1"])
    return int(parts["t"])


def _endpoint(port: int, agent_id: int | None = None, path: str = "/events") -> tuple[WebhookEndpoint, str]:
    endpoint, secret = services.create_endpoint(db.session, f"http://127.0.0.1:{port}{path}",
                                                str(agent_id) if agent_id else None, True, T)
    db.session.commit()
    return endpoint, secret


def _add(agent, email: str, when=T) -> Candidate:
    contact = candidates.CleanContact(name=email.split("@")[0], email=email, phone=None, timezone="UTC", channel="email")
    candidate, _ = candidates.add_candidate(db.session, agent, contact, when + timedelta(days=5), when)
    db.session.commit()
    return candidate


def test_events_reach_the_url_signed_so_a_receiver_can_verify_them(app):
    sink = EventSink().start()
    try:
        agent = make_agent()
        _endpoint_row, secret = _endpoint(sink.port)
        c = _add(agent, "ada@example.com")
        result = outbound.deliver_due(db.session, T)
        assert len(result.delivered) == 1
        (path, headers, body), = sink.received
        assert path == "/events" and verify(secret, headers, body) == int(T.timestamp())
        event = json.loads(body)
        assert event["type"] == "candidate.created" and headers["X-Milo-Event-Id"] == event["id"]
        assert event["data"]["candidate"]["link"] == f"https://jobs.example.test/i/{c.token}"
        assert db.session.query(WebhookDelivery).one().status == WebhookDeliveryStatus.DELIVERED
        assert outbound.deliver_due(db.session, T + timedelta(minutes=5)).delivered == []  # once
    finally:
        sink.stop()


def test_stage_moves_emit_their_events_and_an_agents_url_hears_only_that_agent(app):
    sink = EventSink().start()
    try:
        agent, other = make_agent("One"), make_agent("Two")
        _endpoint(sink.port, agent_id=agent.id)
        a, b = _add(agent, "a@example.com"), _add(other, "b@example.com")
        later = _add(agent, "c@example.com")
        stages.move(db.session, a, Stage.STARTED, T)
        stages.move(db.session, a, Stage.COMPLETED, T)
        stages.move(db.session, a, Stage.COMPLETED, T)  # no second move, no second event
        stages.move(db.session, later, Stage.EXPIRED, T)
        candidates.set_opt_out(db.session, b, "email", True, T, None)
        db.session.commit()
        outbound.deliver_due(db.session, T)
        got = [(e["type"], e["data"]["candidate"]["email"]) for e in sink.events()]
        assert sorted(got) == sorted([("candidate.created", "a@example.com"), ("candidate.created", "c@example.com"),
                                      ("candidate.started", "a@example.com"), ("candidate.completed", "a@example.com"),
                                      ("candidate.expired", "c@example.com")])
        completed = next(e for e in sink.events() if e["type"] == "candidate.completed")
        assert completed["data"]["candidate"]["stage"] == "completed"
    finally:
        sink.stop()


def test_an_opt_out_reaches_a_team_wide_url(app):
    sink = EventSink().start()
    try:
        _endpoint(sink.port)
        c = _add(make_agent(), "a@example.com")
        candidates.set_opt_out(db.session, c, "email", True, T, None)
        db.session.commit()
        outbound.deliver_due(db.session, T)
        opted = [e for e in sink.events() if e["type"] == "candidate.opted_out"]
        assert len(opted) == 1 and opted[0]["data"]["channel"] == "email"
    finally:
        sink.stop()


def _dispatch_process(database_url: str, when: str) -> subprocess.Popen:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MILO_", "MAIL_", "TWILIO_"))}
    env.update(MILO_DATABASE_URL=database_url, MILO_SECRET_KEY="x" * 32, MILO_SCHEDULER="0",
               MILO_PUBLIC_BASE_URL="https://jobs.example.test", MAIL_SERVER="127.0.0.1", MAIL_PORT="9",
               PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "flask", "--app", "milo_portal", "milo", "dispatch", "--at", when],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_while_the_url_is_down_events_are_retried_then_delivered_exactly_once_by_two_processes(app, database_url):
    port = free_port()  # nothing listens yet: the receiver is down
    agent = make_agent()
    _row, secret = _endpoint(port)
    for i in range(30):
        _add(agent, f"p{i}@example.com")
    down = outbound.deliver_due(db.session, T)
    assert len(down.retried) == 30 and not down.delivered
    rows = db.session.query(WebhookDelivery).all()
    assert {(r.status, r.attempts) for r in rows} == {(WebhookDeliveryStatus.SCHEDULED, 1)}
    assert all("Connection" in r.last_error or "refused" in r.last_error for r in rows)
    db.session.commit()
    sink = EventSink(port=port).start()
    try:
        procs = [_dispatch_process(database_url, (T + timedelta(minutes=10)).isoformat()) for _ in range(2)]
        outputs = [p.communicate(timeout=300)[0] for p in procs]
        assert all(p.returncode == 0 for p in procs), outputs
        time.sleep(0.3)
        ids = Counter(e["id"] for e in sink.events())
        assert len(ids) == 30 and set(ids.values()) == {1}, ids.most_common(3)
        for _path, headers, body in sink.received:
            verify(secret, headers, body)
        db.session.expire_all()
        assert {r.status for r in db.session.query(WebhookDelivery)} == {WebhookDeliveryStatus.DELIVERED}
    finally:
        sink.stop()


def test_after_24_hours_of_failures_a_delivery_fails_is_shown_and_resend_delivers(app, auth, client):
    sink = EventSink(status=500).start()
    try:
        endpoint, _secret = _endpoint(sink.port)
        _add(make_agent(), "ada@example.com")
        moment, tries = T, 0
        while db.session.query(WebhookDelivery).one().status != WebhookDeliveryStatus.FAILED:
            outbound.deliver_due(db.session, moment)
            db.session.expire_all()
            delivery = db.session.query(WebhookDelivery).one()
            moment = max(moment, delivery.scheduled_for)
            tries += 1
            assert tries < 60
        delivery = db.session.query(WebhookDelivery).one()
        assert moment <= T + timedelta(hours=24) and 8 <= delivery.attempts == tries
        assert "Gave up" in delivery.last_error and delivery.response_status == 500
        page = client.get(f"/integrations/endpoints/{endpoint.id}").get_data(as_text=True)
        assert "failed" in page and "Resend" in page and "HTTP 500" in page
        sink.status = 200
        assert client.post(f"/integrations/deliveries/{delivery.id}/resend").status_code == 302
        outbound.deliver_due(db.session, now())
        db.session.expire_all()
        assert db.session.query(WebhookDelivery).one().status == WebhookDeliveryStatus.DELIVERED
        assert len(sink.received) == tries + 1
    finally:
        sink.stop()


def test_redirects_are_not_followed(app):
    target = EventSink().start()
    sink = EventSink(status=302, location=f"http://127.0.0.1:{target.port}/elsewhere").start()
    try:
        _endpoint(sink.port)
        _add(make_agent(), "ada@example.com")
        result = outbound.deliver_due(db.session, T)
        assert result.retried and not target.received and len(sink.received) == 1
        assert "redirects are not followed" in db.session.query(WebhookDelivery).one().last_error
    finally:
        sink.stop()
        target.stop()


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/x", "http://localhost/x", "http://10.1.2.3/x",
                                 "http://169.254.169.254/latest/meta-data", "http://[::1]/x", "http://192.168.1.5/"])
def test_private_and_loopback_targets_are_refused_unless_allowed(app, url):
    with pytest.raises(DomainError) as err:
        services.create_endpoint(db.session, url, None, False, T)
    assert "private or loopback" in err.value.message
    services.create_endpoint(db.session, url, None, True, T)  # an admin allowed it


def test_a_name_that_resolves_to_loopback_is_refused_at_delivery(app):
    sink = EventSink().start()
    try:
        endpoint, _ = services.create_endpoint(db.session, f"http://localhost:{sink.port}/x", None, True, T)
        endpoint.allow_private = False  # as if the name had pointed elsewhere when it was saved
        db.session.commit()
        _add(make_agent(), "ada@example.com")
        outbound.deliver_due(db.session, T)
        assert not sink.received
        assert "private or loopback" in db.session.query(WebhookDelivery).one().last_error
    finally:
        sink.stop()


def test_a_silent_receiver_times_out(app, monkeypatch):
    assert outbound.TIMEOUT_SECONDS == 5
    monkeypatch.setattr(outbound, "TIMEOUT_SECONDS", 1)
    silent = SilentServer().start()
    try:
        _endpoint(silent.port)
        _add(make_agent(), "ada@example.com")
        started = time.monotonic()
        result = outbound.deliver_due(db.session, T)
        assert result.retried and time.monotonic() - started < 3
        assert "timed out" in db.session.query(WebhookDelivery).one().last_error
    finally:
        silent.stop()


def test_the_integrations_page_adds_a_url_and_its_test_button_sends_a_ping(app, auth, client):
    sink = EventSink().start()
    try:
        refused = client.post("/integrations/endpoints/new", {"url": f"http://127.0.0.1:{sink.port}/hook"})
        assert refused.status_code == 302 and db.session.query(WebhookEndpoint).count() == 0
        created = client.post("/integrations/endpoints/new", {"url": f"http://127.0.0.1:{sink.port}/hook",
                                                              "allow_private": "y"})
        endpoint = db.session.query(WebhookEndpoint).one()
        assert created.status_code == 303 and endpoint.secret not in created.get_data(as_text=True)
        assert endpoint.secret in client.get(created.headers["Location"]).get_data(as_text=True)
        tested = client.post(f"/integrations/endpoints/{endpoint.id}/test").get_data(as_text=True)
        assert "Delivered" in tested and sink.events()[0]["type"] == "ping"
        verify(endpoint.secret, sink.received[0][1], sink.received[0][2])
    finally:
        sink.stop()


def test_end_to_end_a_greenhouse_post_an_invite_a_completed_interview_and_the_event(app, client, smtp, team_settings):
    """Greenhouse post → candidate → invite at the SMTP sink after one tick → completes on the
    public pages → candidate.completed reaches the team's URL."""
    from milo_portal.followups.services import tick
    from milo_portal.models import Message
    from tests.test_webhooks import Hook, _payload

    sink = EventSink().start()
    try:
        agent = make_agent(questions=("Why us?",))
        _row, secret = _endpoint(sink.port)
        hook = Hook(client, "greenhouse", agent)
        assert hook.send(_payload("greenhouse")).status_code == 201
        c = db.session.query(Candidate).one()
        due = db.session.query(Message).one().scheduled_for
        tick(db.session, max(due, now()))
        smtp.wait_for(1)
        assert smtp.messages[0].rcpt_tos == ["ada@example.com"] and c.token in smtp.messages[0].data.decode()
        client.get(f"/i/{c.token}")
        client.post(f"/i/{c.token}/start", {"name": "Ada Lovelace", "email": "ada@example.com"})
        client.post(f"/i/{c.token}/q/1", {"answer": "Because."})
        assert client.post(f"/i/{c.token}/submit").headers["Location"] == f"/i/{c.token}/done"
        db.session.expire_all()
        assert db.session.get(Candidate, c.id).stage == Stage.COMPLETED
        tick(db.session, now())
        types = Counter(e["type"] for e in sink.events())
        assert types["candidate.completed"] == 1 and types["candidate.created"] == 1
        for _path, headers, body in sink.received:
            verify(secret, headers, body)
    finally:
        sink.stop()


def test_the_refusal_of_a_private_address_names_the_checkbox_by_its_label(app, auth, client):
    """The message tells the admin which box to tick in the words the form uses."""
    import html
    import re

    page = client.get("/integrations").get_data(as_text=True)
    label = re.search(r'name="allow_private" value="y"> ([^(<]+?) \(', page).group(1)
    assert label == "Allow private and loopback addresses"
    refused = client.post("/integrations/endpoints/new", {"url": "http://10.1.2.3/hook"}, follow_redirects=True)
    text = html.unescape(refused.get_data(as_text=True))
    assert f'tick "{label}"' in text
    with pytest.raises(DomainError) as err:
        services.create_endpoint(db.session, "http://127.0.0.1/x", None, False, T)
    assert f'"{label}"' in err.value.message


def test_reloading_the_page_after_adding_a_url_shows_no_secret_and_adds_nothing(app, auth, client):
    created = client.post("/integrations/endpoints/new", {"url": "https://events.example.com/milo"})
    endpoint = db.session.query(WebhookEndpoint).one()
    assert created.status_code == 303 and created.headers["Location"].endswith(f"/integrations/endpoints/{endpoint.id}")
    first = client.get(created.headers["Location"])
    again = client.get(created.headers["Location"])
    assert endpoint.secret in first.get_data(as_text=True) and first.headers["Cache-Control"] == "no-store"
    assert again.status_code == 200 and endpoint.secret not in again.get_data(as_text=True)
    assert db.session.query(WebhookEndpoint).count() == 1
