"""Server-side login sessions: one ``user_session`` row per login.

The session cookie and the remember cookie both carry a random token; the database keeps
only its SHA-256. A request is logged in only while that row is neither revoked nor expired
and its user is active, so logging out, a password change, a deactivation or a revocation
on the Team page ends the session wherever a copy of its cookies is.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.orm.attributes import set_committed_value

from ..models import User, UserSession
from ..transactions import write_unit

# Activity is written at most this often, so an ordinary GET does not write every time.
TOUCH_EVERY = timedelta(minutes=5)
# Anything longer than a token we issue is not one of ours; do not even hash it.
_MAX_TOKEN_LENGTH = 100


@dataclass(frozen=True)
class SessionPolicy:
    """How long sessions live: ``idle`` unused (not remembered), ``remember`` after login."""

    idle: timedelta
    remember: timedelta


def hash_token(token: str) -> str:
    """Return the stored form of a session token (hex SHA-256)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def device_label(user_agent: str | None) -> str:
    """Return a short "Browser on System" label from a User-Agent header, for the Team page."""
    ua = user_agent or ""
    browser = next((name for pattern, name in (
        (r"Edg/", "Edge"), (r"OPR/|Opera", "Opera"), (r"Firefox/", "Firefox"),
        (r"Chrome/|Chromium/|CriOS/", "Chrome"), (r"Safari/", "Safari"),
    ) if re.search(pattern, ua)), None)
    system = next((name for pattern, name in (
        (r"iPhone|iPad", "iOS"), (r"Android", "Android"), (r"Windows", "Windows"),
        (r"Mac OS X|Macintosh", "macOS"), (r"CrOS", "ChromeOS"), (r"Linux", "Linux"),
    ) if re.search(pattern, ua)), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or (re.sub(r"[\x00-\x1f\x7f]", "", ua)[:40] or "Unknown device")


def start_session(session: Session, user: User, now: datetime, policy: SessionPolicy, *,
                  remember: bool, address: str, user_agent: str | None) -> str:
    """Record a new login for ``user`` and return its raw token (256 bits from ``secrets``)."""
    token = secrets.token_urlsafe(32)
    row = UserSession(
        user_id=user.id, token_hash=hash_token(token), created_at=now, last_seen_at=now,
        expires_at=now + (policy.remember if remember else policy.idle), remember=remember,
        address=address[:64], device=device_label(user_agent),
    )
    session.add(row)
    session.commit()
    user.login_token, user.login_session_id = token, row.id
    return token


def find_session(session: Session, token: str | None, now: datetime) -> UserSession | None:
    """Return the live session this token opens, or None (unknown, revoked, expired, inactive).

    The row is found by the token's hash, so the database never compares a secret; the hash
    found is compared again in constant time.
    """
    if not token or len(token) > _MAX_TOKEN_LENGTH:
        return None
    digest = hash_token(token)
    row = session.scalar(
        select(UserSession).options(joinedload(UserSession.user)).where(UserSession.token_hash == digest)
    )
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    if row.revoked_at is not None or row.expires_at <= now or not row.user.active:
        return None
    return row


def touch(session: Session, row: UserSession, now: datetime, policy: SessionPolicy, address: str) -> bool:
    """Record activity on a live session at most every ``TOUCH_EVERY``; return whether it wrote.

    A session not remembered slides its expiry forward; a remembered one keeps its end.
    """
    if now - row.last_seen_at < TOUCH_EVERY:
        return False
    if session.new or session.dirty or session.deleted:
        # Loaded late in a request that has work of its own: never commit that from here.
        return False
    values = {"last_seen_at": now, "address": address[:64]}
    if not row.remember:
        values["expires_at"] = now + policy.idle
    # One short write unit of its own (the request is a GET: its transaction is a read).
    # It begins IMMEDIATE on SQLite: an UPDATE in a deferred transaction that another writer
    # committed after failed at once with "database is locked" (a 500 on the candidates list
    # under load). The condition makes two workers touching at once write once.
    with write_unit(session) as unit:
        changed = unit.execute(
            update(UserSession)
            .where(UserSession.id == row.id, UserSession.revoked_at.is_(None),
                   UserSession.last_seen_at <= now - TOUCH_EVERY)
            .values(**values)
        ).rowcount
    return changed == 1


def end_sessions(session: Session, user_id: int, now: datetime, keep: int | None = None) -> int:
    """Revoke every live session of a user except ``keep``, in the caller's transaction."""
    query = update(UserSession).where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
    if keep is not None:
        query = query.where(UserSession.id != keep)
    return session.execute(query.values(revoked_at=now, shown_once_for=None, shown_once=None)).rowcount


def revoke(session: Session, row: UserSession, now: datetime) -> None:
    """End one session (logout, or Revoke on the Team page)."""
    if row.revoked_at is None:
        row.revoked_at = now
    row.shown_once_for = row.shown_once = None
    session.commit()


def keep_shown_once(session: Session, session_id: int | None, what: str, secret: str) -> None:
    """Keep a new secret for the page the redirect leads to, in the caller's transaction.

    It waits in this login's own row (never in a cookie), replacing any secret not shown yet.
    """
    if session_id is None:
        return
    session.execute(update(UserSession).where(UserSession.id == session_id)
                    .values(shown_once_for=what[:60], shown_once=secret))


def take_shown_once(session: Session, session_id: int | None, what: str) -> str | None:
    """The secret kept for ``what`` by this login, cleared as it is read: the first GET shows it, a reload not.

    A page without one (nearly every visit) only reads: whether the row holds one is decided
    from the row loaded with the login. The read and the clearing are one conditional UPDATE
    in a short write unit of their own, so two tabs never both get it.
    """
    if session_id is None:
        return None
    row = session.get(UserSession, session_id)
    if row is None or row.shown_once_for != what:
        return None
    with write_unit(session) as unit:
        # The row's lock (PostgreSQL; SQLite's write lock does the same) makes a second tab
        # wait, then find it cleared.
        secret = unit.scalar(select(UserSession.shown_once).where(
            UserSession.id == session_id, UserSession.shown_once_for == what).with_for_update())
        if secret is not None:
            unit.execute(update(UserSession).where(UserSession.id == session_id)
                         .values(shown_once_for=None, shown_once=None)
                         .execution_options(synchronize_session=False))
    set_committed_value(row, "shown_once_for", None)
    set_committed_value(row, "shown_once", None)
    return secret


def live_sessions(session: Session, now: datetime) -> list[UserSession]:
    """Every session still open, of active users, most recently used first."""
    return list(session.scalars(
        select(UserSession).join(User, UserSession.user_id == User.id)
        .where(UserSession.revoked_at.is_(None), UserSession.expires_at > now, User.active.is_(True))
        .order_by(UserSession.user_id, UserSession.last_seen_at.desc())
    ))
