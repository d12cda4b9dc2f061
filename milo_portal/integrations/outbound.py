"""Outbound candidate events: an outbox of signed deliveries, claimed like outgoing messages.

A stage move inserts one ``WebhookDelivery`` per matching endpoint in the same transaction
(the outbox pattern); each scheduler tick claims due rows (PostgreSQL: ``FOR UPDATE SKIP
LOCKED``; SQLite: one conditional UPDATE per row) and commits the claim before any network
call, so several processes never deliver one row twice. A failed delivery is retried with
backoff for 24 hours, then marked failed and shown on the integrations page.

A claim whose lease runs out (the process died mid-delivery) is scheduled again: unlike an
e-mail, an event carries its id, so a receiver drops the rare repeat.
"""
from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import socket
import ssl
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from ..errors import DomainError
from ..models import Candidate, WebhookDelivery, WebhookDeliveryStatus, WebhookEndpoint
from ..transactions import assert_no_transaction, end_transaction, write_unit
from .signing import milo_signature

log = logging.getLogger(__name__)

# Event log types (and stage moves) that other systems hear about.
EVENT_TYPES = {
    "added": "candidate.created",
    "started": "candidate.started",
    "completed": "candidate.completed",
    "expired": "candidate.expired",
    "opted_out": "candidate.opted_out",
}
TIMEOUT_SECONDS = 5
RETRY_FOR = timedelta(hours=24)
LEASE = timedelta(minutes=2)
BATCH = 20


def candidate_json(candidate: Candidate) -> dict:
    """A candidate as events and the API show it (with their unique link)."""
    from ..messaging.services import public_url

    def iso(value):
        return value.isoformat().replace("+00:00", "Z") if value else None

    return {
        "id": candidate.id, "agent_id": candidate.agent_id, "name": candidate.name, "email": candidate.email,
        "phone": candidate.phone, "timezone": candidate.timezone, "channel": candidate.channel,
        "source": candidate.source, "source_detail": candidate.source_detail, "stage": candidate.stage,
        "link": public_url(f"/i/{candidate.token}"), "deadline_at": iso(candidate.deadline_at),
        "invited_at": iso(candidate.invited_at), "started_at": iso(candidate.started_at),
        "completed_at": iso(candidate.completed_at), "created_at": iso(candidate.created_at),
        "updated_at": iso(candidate.updated_at),
    }


def emit(session: Session, candidate: Candidate, event_type: str, now: datetime, channel: str | None = None) -> int:
    """Queue the event for every active endpoint of the team or of this candidate's agent.

    Called where stages move (``candidates.stages``), in the caller's transaction; returns
    how many deliveries were queued. Event types nobody outside hears about are ignored.
    """
    name = EVENT_TYPES.get(event_type)
    if name is None:
        return 0
    endpoints = session.scalars(select(WebhookEndpoint).where(
        WebhookEndpoint.active.is_(True),
        or_(WebhookEndpoint.agent_id.is_(None), WebhookEndpoint.agent_id == candidate.agent_id))).all()
    if not endpoints:
        return 0
    event_id = f"evt_{uuid.uuid4().hex}"
    body = {"id": event_id, "type": name, "created_at": now.isoformat().replace("+00:00", "Z"),
            "data": {"candidate": candidate_json(candidate)}}
    if channel:
        body["data"]["channel"] = channel
    payload = json.dumps(body, separators=(",", ":"))
    for endpoint in endpoints:
        session.add(WebhookDelivery(
            endpoint_id=endpoint.id, event_id=event_id, event_type=name, candidate_id=candidate.id,
            payload=payload, status=WebhookDeliveryStatus.SCHEDULED, scheduled_for=now, attempts=0,
            give_up_at=now + RETRY_FOR, created_at=now))
    return len(endpoints)


# --- targets (SSRF) -----------------------------------------------------------------------

def is_public(ip: str) -> bool:
    """Whether an address is a public unicast one (not private, loopback, link-local, reserved)."""
    address = ipaddress.ip_address(ip.split("%")[0])
    if getattr(address, "ipv4_mapped", None):
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def check_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL; raise DomainError for anything else."""
    try:
        parts = urlsplit((url or "").strip())
        port = parts.port
    except ValueError:
        raise DomainError("This is not a valid URL.", "url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DomainError("Give an http:// or https:// URL.", "url")
    if parts.username or parts.password:
        raise DomainError("Leave credentials out of the URL: events are signed instead.", "url")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def resolve(url: str, allow_private: bool) -> tuple[str, str, int, str]:
    """Resolve the target once and refuse private, loopback and link-local addresses (SSRF).

    Returns (scheme, host, port, ip); the connection goes to that very ip, so a DNS answer
    that changes between the check and the connect cannot point it inside the network.
    """
    scheme, host, port = check_url(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise DomainError(f"The host {host} cannot be resolved ({err}).", "url") from None
    ips = [info[4][0] for info in infos]
    if not allow_private:
        refused = [ip for ip in ips if not is_public(ip)]
        if refused:
            raise DomainError(f"{host} resolves to a private or loopback address ({refused[0]}): refused. "
                              "An admin can allow private targets for this URL.", "url")
    return scheme, host, port, ips[0]


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host, port, ip, timeout):
        super().__init__(host, port, timeout=timeout)
        self._ip = ip

    def connect(self):
        self.sock = socket.create_connection((self._ip, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host, port, ip, timeout):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._ip = ip

    def connect(self):
        sock = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


@dataclass
class PostResult:
    """What one delivery attempt got: ``ok`` only for a 2xx answer."""

    ok: bool
    status: int | None = None
    error: str = ""


def post(url: str, secret: str, payload: str, event_id: str, now: datetime, allow_private: bool) -> PostResult:
    """POST a signed event (5 s timeout, no redirects followed); never raises for network trouble."""
    body = payload.encode("utf-8")
    try:
        scheme, host, port, ip = resolve(url, allow_private)
    except DomainError as err:
        return PostResult(False, error=err.message)
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection_class = _PinnedHTTPS if scheme == "https" else _PinnedHTTP
    connection = connection_class(host, port, ip, TIMEOUT_SECONDS)
    try:
        connection.request("POST", path, body=body, headers={
            "Content-Type": "application/json", "User-Agent": "MiloPortal-Webhooks/1",
            "X-Milo-Signature": milo_signature(secret, body, int(now.timestamp())),
            "X-Milo-Event-Id": event_id})
        response = connection.getresponse()
        response.read(65536)
    except (OSError, http.client.HTTPException) as err:
        return PostResult(False, error=f"{type(err).__name__}: {err}"[:500])
    finally:
        connection.close()
    if 200 <= response.status < 300:
        return PostResult(True, response.status)
    if 300 <= response.status < 400:
        return PostResult(False, response.status, f"HTTP {response.status}: redirects are not followed")
    return PostResult(False, response.status, f"HTTP {response.status} {response.reason}"[:500])


# --- delivering ---------------------------------------------------------------------------

def backoff(attempts: int) -> timedelta:
    """Wait before the next try: 30 s doubling per attempt, at most an hour."""
    return timedelta(seconds=min(30 * 2 ** max(attempts - 1, 0), 3600))


@dataclass
class DeliverResult:
    """What one pass of the events outbox did."""

    delivered: list[int] = field(default_factory=list)
    retried: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)

    def summary(self) -> str:
        return f"events: delivered {len(self.delivered)}, retrying {len(self.retried)}, failed {len(self.failed)}"


def claim(session: Session, now: datetime, limit: int) -> list[int]:
    """Claim up to ``limit`` due deliveries for this process and commit before returning."""
    values = {"status": WebhookDeliveryStatus.SENDING, "lease_until": now + LEASE,
              "attempts": WebhookDelivery.attempts + 1}
    due = (select(WebhookDelivery.id).where(WebhookDelivery.status == WebhookDeliveryStatus.SCHEDULED,
                                            WebhookDelivery.scheduled_for <= now)
           .order_by(WebhookDelivery.scheduled_for, WebhookDelivery.id).limit(limit))
    if session.get_bind().dialect.name == "postgresql":
        ids = list(session.scalars(due.with_for_update(skip_locked=True)))
        if ids:
            session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(ids)).values(**values)
                            .execution_options(synchronize_session=False))
        session.commit()
        return ids
    claimed = []
    for delivery_id in list(session.scalars(due)):
        changed = session.execute(update(WebhookDelivery).where(
            WebhookDelivery.id == delivery_id, WebhookDelivery.status == WebhookDeliveryStatus.SCHEDULED)
            .values(**values).execution_options(synchronize_session=False)).rowcount
        if changed == 1:
            claimed.append(delivery_id)
    session.commit()
    return claimed


def deliver_due(session: Session, now: datetime, batch: int = BATCH) -> DeliverResult:
    """Deliver every due event as of ``now``; the caller's transaction is committed first."""
    out = DeliverResult()
    session.commit()
    work = Session(bind=session.get_bind(), expire_on_commit=False)
    try:
        with write_unit(work):
            # A claim whose process died: scheduled again (receivers drop a repeat by event id).
            work.execute(update(WebhookDelivery).where(
                WebhookDelivery.status == WebhookDeliveryStatus.SENDING, WebhookDelivery.lease_until < now)
                .values(status=WebhookDeliveryStatus.SCHEDULED, lease_until=None)
                .execution_options(synchronize_session=False))
        while True:
            ids = claim(work, now, batch)
            if not ids:
                break
            rows = work.execute(select(WebhookDelivery, WebhookEndpoint).join(WebhookEndpoint)
                                .where(WebhookDelivery.id.in_(ids)).order_by(WebhookDelivery.id)).all()
            end_transaction(work)
            for delivery, endpoint in rows:
                _deliver_one(work, delivery, endpoint, now, out)
            work.expunge_all()
    finally:
        work.close()
    return out


def _deliver_one(work: Session, delivery: WebhookDelivery, endpoint: WebhookEndpoint, now: datetime,
                 out: DeliverResult) -> None:
    assert_no_transaction(work, "Delivering an event")
    if not endpoint.active:
        result = PostResult(False, error="The endpoint is switched off")
    else:
        result = post(endpoint.url, endpoint.secret, delivery.payload, delivery.event_id, now, endpoint.allow_private)
    with write_unit(work):
        values: dict = {"lease_until": None, "response_status": result.status, "last_error": result.error or None}
        if result.ok:
            values.update(status=WebhookDeliveryStatus.DELIVERED, delivered_at=now)
            out.delivered.append(delivery.id)
        elif now + backoff(delivery.attempts) < delivery.give_up_at and endpoint.active:
            values.update(status=WebhookDeliveryStatus.SCHEDULED, scheduled_for=now + backoff(delivery.attempts))
            out.retried.append(delivery.id)
        else:
            values.update(status=WebhookDeliveryStatus.FAILED,
                          last_error=f"Gave up after {delivery.attempts} attempts: {result.error}"[:1000])
            out.failed.append(delivery.id)
        work.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery.id,
                                                   WebhookDelivery.status == WebhookDeliveryStatus.SENDING)
                     .values(**values).execution_options(synchronize_session=False))


def resend(session: Session, delivery: WebhookDelivery, now: datetime) -> None:
    """Queue a delivered or failed event again at once, with a fresh 24 h of retries."""
    if delivery.status in (WebhookDeliveryStatus.SCHEDULED, WebhookDeliveryStatus.SENDING):
        raise DomainError("This event is already waiting to be delivered.")
    delivery.status = WebhookDeliveryStatus.SCHEDULED
    delivery.scheduled_for = now
    delivery.give_up_at = now + RETRY_FOR
    delivery.attempts = 0
    delivery.last_error = None


def test_event(endpoint: WebhookEndpoint, now: datetime) -> PostResult:
    """Send a ``ping`` event to an endpoint now (the recruiter waits for the answer; no transaction open)."""
    event_id = f"evt_{uuid.uuid4().hex}"
    payload = json.dumps({"id": event_id, "type": "ping", "created_at": now.isoformat().replace("+00:00", "Z"),
                          "data": {}}, separators=(",", ":"))
    return post(endpoint.url, endpoint.secret, payload, event_id, now, endpoint.allow_private)


def tick_step(session: Session, now: datetime) -> DeliverResult:
    """The scheduler tick's step for integrations: forget old log bodies, deliver due events."""
    from .inbound import forget_bodies

    with write_unit(session) as work:
        forget_bodies(work, now)
    return deliver_due(session, now)
