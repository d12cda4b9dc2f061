"""Account rules: login with database-backed throttling, team membership, passwords."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash

from ..errors import DomainError
from ..models import LoginAttempt, User
from ..transactions import delete_in_units
from . import sessions

MIN_PASSWORD_LENGTH = 10
# Compared against when the e-mail is unknown, so a miss costs as much as a wrong password.
_DUMMY_HASH = (
    "scrypt:32768:8:1$2aQ9y3wYVvBq8r6K$"
    "a6f1d5c0b7f1ac3e55f0b5d2d1e2d6c5b4c3e2f1a0b9c8d7e6f5a4b3c2d1e0f9"
    "a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7"
)
# One answer for a wrong password, an unknown e-mail and a deactivated account (even with
# its right password): anything else would tell a guesser which part was right.
WRONG_CREDENTIALS = "Wrong e-mail or password."
# The first wait once an address has used its free failures on an account; it doubles.
FIRST_DELAY = timedelta(minutes=1)
# How long an address's failures on one account are remembered (a success from that address
# on that account forgets them), so a slow guesser keeps waiting longer and longer.
PAIR_MEMORY = timedelta(hours=24)
# Login attempts are kept only for the throttling, which reads back at most PAIR_MEMORY or
# the per-address window; the audit log is the lasting record of logins (with the address).
# A month is far past what the throttling reads and still lets an operator look at last
# week's guessing in the table itself.
ATTEMPTS_KEPT = timedelta(days=30)
PURGE_CHUNK = 1000


@dataclass(frozen=True)
class ThrottleLimits:
    """Failed-login limits: per (address, account) pair, and per address across accounts.

    A pair may fail ``free_failures`` times; then each try waits 1, 2, 4… minutes after the
    last failure, at most ``max_delay``. An address with ``per_address`` failures within
    ``window`` (whatever the accounts) is held back until the oldest leaves the window.
    No limit ever applies to an address that has not failed: the owner logging in from
    elsewhere is never locked out by someone guessing their password.
    """

    free_failures: int
    max_delay: timedelta
    window: timedelta
    per_address: int


class LoginThrottled(DomainError):
    """Too many failed attempts; ``retry_after`` says for how long."""

    def __init__(self, retry_after: timedelta) -> None:
        minutes = max(1, int((retry_after.total_seconds() + 59) // 60))
        super().__init__(
            f"Too many failed attempts from this address. For your security, please wait "
            f"{minutes} minute{'s' if minutes != 1 else ''} and try again."
        )
        self.retry_after = retry_after


def normalise_email(email: str) -> str:
    """Return the e-mail address trimmed and lower-cased, as stored."""
    return (email or "").strip().lower()


def _pair_wait(session: Session, email: str, address: str, now: datetime,
               limits: ThrottleLimits) -> timedelta | None:
    """Return how long this address must still wait before trying this account, or None."""
    pair = (LoginAttempt.address == address, LoginAttempt.email == email)
    since = now - PAIR_MEMORY
    last_success = session.scalar(select(func.max(LoginAttempt.at)).where(*pair, LoginAttempt.success.is_(True)))
    if last_success is not None and last_success > since:
        since = last_success
    # Past ~30 doublings the delay is capped anyway: no need to count further.
    failures = session.scalars(
        select(LoginAttempt.at).where(*pair, LoginAttempt.success.is_(False), LoginAttempt.at > since)
        .order_by(LoginAttempt.at.desc()).limit(limits.free_failures + 30)
    ).all()
    if len(failures) < limits.free_failures:
        return None
    delay = min(limits.max_delay, FIRST_DELAY * 2 ** (len(failures) - limits.free_failures))
    wait = failures[0] + delay - now
    return wait if wait > timedelta(0) else None


def _address_wait(session: Session, address: str, now: datetime, limits: ThrottleLimits) -> timedelta | None:
    """Return how long until this address's failures (any account) drop under the ceiling."""
    failures = session.scalars(
        select(LoginAttempt.at)
        .where(LoginAttempt.address == address, LoginAttempt.success.is_(False),
               LoginAttempt.at > now - limits.window)
        .order_by(LoginAttempt.at.desc()).limit(limits.per_address)
    ).all()
    if len(failures) < limits.per_address:
        return None
    # The oldest of the last ``per_address`` failures must leave the window before another try.
    return failures[-1] + limits.window - now


def _check_throttle(session: Session, email: str, address: str, now: datetime, limits: ThrottleLimits) -> None:
    """Raise LoginThrottled if this address may not try this account now."""
    waits = [w for w in (_pair_wait(session, email, address, now, limits),
                         _address_wait(session, address, now, limits)) if w is not None]
    if waits:
        raise LoginThrottled(max(waits))


def _serialise_address(session: Session, address: str) -> None:
    """On PostgreSQL, let one login attempt per address decide and record at a time.

    Without it, parallel guesses would all pass the check before any of them is recorded.
    (SQLite serialises writers already: the write transaction begins IMMEDIATE.)
    """
    if session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(b"milo-login:" + address.encode()).digest()[:8], "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def authenticate(session: Session, email: str, password: str, address: str, now: datetime,
                 limits: ThrottleLimits) -> User:
    """Return the active user for these credentials, recording the attempt; raise on failure.

    Refused attempts while throttled are not recorded, so waiting is all it takes.
    """
    email = normalise_email(email)
    _check_throttle(session, email, address, now, limits)
    user = session.scalar(select(User).where(User.email == email))
    stored = user.password_hash if user is not None else _DUMMY_HASH
    active = user is not None and user.active
    # The hash takes tens of milliseconds: run it with no transaction open.
    session.commit()
    ok = check_password_hash(stored, password) and active
    # Record in one short write that re-reads the limits: attempts running in parallel
    # from the same address may have failed meanwhile.
    _serialise_address(session, address)
    try:
        _check_throttle(session, email, address, now, limits)
    except LoginThrottled:
        session.rollback()
        raise
    session.add(LoginAttempt(at=now, email=email, address=address, success=ok))
    session.commit()
    if not ok:
        raise DomainError(WRONG_CREDENTIALS)
    return user


def purge_login_attempts(session: Session, now: datetime, address_window: timedelta) -> int:
    """Delete attempts the throttling can no longer read (older than ATTEMPTS_KEPT, or the
    per-address window if that is longer), in short write units; return how many went."""
    cutoff = now - max(ATTEMPTS_KEPT, PAIR_MEMORY, address_window)
    return delete_in_units(session, LoginAttempt, LoginAttempt.at < cutoff, PURGE_CHUNK)


def log_in(session: Session, email: str, password: str, address: str, user_agent: str | None,
           remember: bool, now: datetime, limits: ThrottleLimits, policy: sessions.SessionPolicy) -> User:
    """Check the credentials and start a server-side session; the user carries its token."""
    user = authenticate(session, email, password, address, now, limits)
    sessions.start_session(session, user, now, policy, remember=remember, address=address,
                           user_agent=user_agent)
    return user


def validate_password(password: str, field: str = "password") -> None:
    """Refuse passwords too short to be safe."""
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise DomainError(f"Use at least {MIN_PASSWORD_LENGTH} characters.", field)


def create_user(session: Session, email: str, name: str, password: str) -> User:
    """Add a teammate; the e-mail must be new."""
    email = normalise_email(email)
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise DomainError("Someone on the team already uses this e-mail.", "email")
    validate_password(password)
    user = User(email=email, name=name.strip(), active=True)
    user.set_password(password)
    session.add(user)
    session.commit()
    return user


def set_password(session: Session, user: User, password: str, now: datetime, keep: int | None = None) -> None:
    """Set a new password; every session of that user ends, except session ``keep``."""
    validate_password(password)
    user.set_password(password)
    sessions.end_sessions(session, user.id, now, keep=keep)
    session.commit()


def log_out_everywhere(session: Session, user: User, now: datetime) -> int:
    """End every session of ``user``; return how many there were."""
    count = sessions.end_sessions(session, user.id, now)
    session.commit()
    return count


def set_active(session: Session, user: User, active: bool, acting: User, now: datetime) -> None:
    """Deactivate or reactivate a teammate (never oneself, never the last active user)."""
    if user.id == acting.id and not active:
        raise DomainError("You cannot deactivate your own account.")
    if not active:
        others = session.scalar(
            select(func.count()).select_from(User).where(User.active.is_(True), User.id != user.id)
        )
        if not others:
            raise DomainError("At least one account must stay active.")
        sessions.end_sessions(session, user.id, now)  # logged out at once, everywhere
    user.active = active
    session.commit()


def update_profile(session: Session, user: User, name: str, timezone: str) -> None:
    """Change the name used to sign messages and the time zone used to show times."""
    user.name = name.strip()
    user.timezone = timezone
    session.commit()
