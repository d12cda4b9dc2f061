"""Signature schemes of inbound and outbound webhooks: pure functions of the secret and bytes.

Every comparison is constant-time (``hmac.compare_digest``).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime

TOLERANCE_SECONDS = 300  # a signed timestamp older (or newer) than this is refused


class SignatureError(Exception):
    """The request's signature is missing, wrong or stale; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _hmac(secret: str, data: bytes, digest=hashlib.sha256) -> bytes:
    return hmac.new(secret.encode("utf-8"), data, digest).digest()


def milo_signature(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Milo-Signature`` header value: ``t=<unix>,v1=<hex HMAC-SHA256 of "t.body">``."""
    mac = _hmac(secret, str(timestamp).encode() + b"." + body).hex()
    return f"t={timestamp},v1={mac}"


def verify_milo(secrets: list[str], header: str, body: bytes, now: datetime) -> None:
    """Accept a Milo-scheme signature by any of ``secrets`` within the tolerance; else raise."""
    parts: dict[str, list[str]] = {}
    for item in (header or "").split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        timestamp = int(parts.get("t", [""])[0])
    except ValueError:
        raise SignatureError("missing or malformed X-Milo-Signature") from None
    candidates = parts.get("v1", [])
    if not candidates:
        raise SignatureError("missing or malformed X-Milo-Signature")
    if abs(now.timestamp() - timestamp) > TOLERANCE_SECONDS:
        raise SignatureError("stale timestamp (more than 5 minutes from our clock)")
    signed = str(timestamp).encode() + b"." + body
    for secret in secrets:
        expected = _hmac(secret, signed).hex()
        if any(hmac.compare_digest(expected, given.strip().lower()) for given in candidates):
            return
    raise SignatureError("signature does not match")


def verify_hex_body(secrets: list[str], given: str, body: bytes) -> None:
    """Accept a hex HMAC-SHA256 of the raw body (Greenhouse after its "sha256 " prefix, Workable)."""
    given = (given or "").strip().lower()
    if not given:
        raise SignatureError("missing signature header")
    for secret in secrets:
        if hmac.compare_digest(_hmac(secret, body).hex(), given):
            return
    raise SignatureError("signature does not match")


def verify_greenhouse(secrets: list[str], header: str, body: bytes) -> None:
    """Greenhouse: ``Signature: sha256 <hex HMAC-SHA256 of the body>``."""
    algorithm, _, given = (header or "").strip().partition(" ")
    if algorithm.lower() != "sha256":
        raise SignatureError("missing or malformed Signature header")
    verify_hex_body(secrets, given, body)


def verify_indeed(secrets: list[str], header: str, body: bytes) -> None:
    """Indeed Apply: ``X-Indeed-Signature`` = base64 HMAC-SHA1 of the raw body with the API secret."""
    given = (header or "").strip()
    if not given:
        raise SignatureError("missing X-Indeed-Signature")
    for secret in secrets:
        expected = base64.b64encode(_hmac(secret, body, hashlib.sha1)).decode()
        if hmac.compare_digest(expected, given):
            return
    raise SignatureError("signature does not match")


def verify_lever(secrets: list[str], token: str, triggered_at, signature: str, now: datetime) -> None:
    """Lever: the body's ``signature`` = hex HMAC-SHA256 of ``token + triggeredAt`` (milliseconds)."""
    if not token or not signature or triggered_at in (None, ""):
        raise SignatureError("missing token, triggeredAt or signature in the body")
    try:
        moment = int(triggered_at) / 1000
    except (TypeError, ValueError):
        raise SignatureError("malformed triggeredAt") from None
    if abs(now.timestamp() - moment) > TOLERANCE_SECONDS:
        raise SignatureError("stale timestamp (more than 5 minutes from our clock)")
    data = f"{token}{triggered_at}".encode()
    for secret in secrets:
        if hmac.compare_digest(_hmac(secret, data).hex(), str(signature).strip().lower()):
            return
    raise SignatureError("signature does not match")
