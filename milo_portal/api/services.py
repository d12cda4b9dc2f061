"""API keys (hashed, named, revocable), idempotent replays and the per-key rate limit."""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import DomainError
from ..models import ApiIdempotency, ApiKey

KEY_PREFIX = "milo_"
IDEMPOTENCY_KEPT = timedelta(hours=24)


def _hash(raw: str) -> str:
    # The key holds 192 random bits: a fast hash cannot be brute-forced, and every API
    # request checks one, so no slow password hash is needed here.
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def create_key(session: Session, name: str, now: datetime, actor_id: int | None) -> tuple[ApiKey, str]:
    """Make a key; return it and the secret, which is shown once and stored only hashed."""
    name = (name or "").strip()
    if not name:
        raise DomainError("Name the key after what uses it (e.g. \"Zapier\").", "name")
    if len(name) > 100:
        raise DomainError("Keep the name under 100 characters.", "name")
    prefix = secrets.token_hex(4)
    raw = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(24)}"
    key = ApiKey(name=name, prefix=prefix, key_hash=_hash(raw), created_by_id=actor_id, created_at=now)
    session.add(key)
    session.flush()
    return key, raw


def revoke_key(key: ApiKey, now: datetime) -> None:
    """Revoke a key: every request with it gets 401 from now on."""
    if key.revoked_at is None:
        key.revoked_at = now


def authenticate(session: Session, header: str | None) -> ApiKey | None:
    """The live key an ``Authorization: Bearer …`` header carries, or None."""
    scheme, _, raw = (header or "").partition(" ")
    raw = raw.strip()
    if scheme.lower() != "bearer" or not raw.startswith(KEY_PREFIX):
        return None
    prefix = raw[len(KEY_PREFIX):].split("_", 1)[0][:12]
    key = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if key is None or key.revoked_at is not None or not hmac.compare_digest(key.key_hash, _hash(raw)):
        return None
    return key


def request_hash(method: str, path: str, body: bytes) -> str:
    """What makes two requests "the same" for an Idempotency-Key: method, path and JSON body."""
    try:
        canonical = json.dumps(json.loads(body or b"null"), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).hexdigest()


def stored_response(session: Session, key: ApiKey, idem: str, digest: str, now: datetime):
    """(status, body) already given for this Idempotency-Key, or None; DomainError if the body differs."""
    row = session.scalar(select(ApiIdempotency).where(ApiIdempotency.api_key_id == key.id,
                                                      ApiIdempotency.key == idem[:200]))
    if row is None or row.created_at < now - IDEMPOTENCY_KEPT:
        return None
    if row.request_hash != digest:
        raise DomainError("This Idempotency-Key was used with another request body.", "Idempotency-Key")
    return row.status, row.body


def store_response(session: Session, key: ApiKey, idem: str, digest: str, status: int, body: str,
                   now: datetime) -> None:
    """Keep the response given for this Idempotency-Key (the caller commits)."""
    session.execute(ApiIdempotency.__table__.delete().where(
        ApiIdempotency.api_key_id == key.id, ApiIdempotency.key == idem[:200]))
    try:
        with session.begin_nested():
            session.add(ApiIdempotency(api_key_id=key.id, key=idem[:200], request_hash=digest, status=status,
                                       body=body, created_at=now))
    except IntegrityError:
        pass  # the same key at the same moment in another request: its response stands
