"""Account rules: login with database-backed throttling, team membership, passwords."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..errors import DomainError
from ..models import LoginAttempt, User, new_token

MIN_PASSWORD_LENGTH = 10
# Compared against when the e-mail is unknown, so a miss costs as much as a wrong password.
_DUMMY_HASH = (
    "scrypt:32768:8:1$2aQ9y3wYVvBq8r6K$"
    "a6f1d5c0b7f1ac3e55f0b5d2d1e2d6c5b4c3e2f1a0b9c8d7e6f5a4b3c2d1e0f9"
    "a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7"
)


@dataclass(frozen=True)
class ThrottleLimits:
    """How many failed logins are allowed per account and per address in a window."""

    window: timedelta
    per_account: int
    per_address: int


class LoginThrottled(DomainError):
    """Too many failed attempts; ``retry_after`` says for how long."""

    def __init__(self, retry_after: timedelta) -> None:
        minutes = max(1, int((retry_after.total_seconds() + 59) // 60))
        super().__init__(
            f"Too many failed attempts. For your security, please wait {minutes} "
            f"minute{'s' if minutes != 1 else ''} and try again, or ask a teammate to reset "
            "your password."
        )
        self.retry_after = retry_after


def normalise_email(email: str) -> str:
    """Return the e-mail address trimmed and lower-cased, as stored."""
    return (email or "").strip().lower()


def _retry_after(session: Session, column, value: str, limit: int, now: datetime,
                 window: timedelta) -> timedelta | None:
    """Return how long until the failures for ``value`` drop under ``limit``, or None."""
    since = now - window
    last_success = session.scalar(
        select(func.max(LoginAttempt.at)).where(column == value, LoginAttempt.success.is_(True))
    )
    if last_success is not None and last_success > since:
        since = last_success
    failures = session.scalars(
        select(LoginAttempt.at)
        .where(column == value, LoginAttempt.success.is_(False), LoginAttempt.at > since)
        .order_by(LoginAttempt.at.desc())
        .limit(limit)
    ).all()
    if len(failures) < limit:
        return None
    # The oldest of the last ``limit`` failures must leave the window before another try.
    return failures[-1] + window - now


def authenticate(session: Session, email: str, password: str, address: str, now: datetime,
                 limits: ThrottleLimits) -> User:
    """Return the active user for these credentials, recording the attempt; raise on failure.

    Refused attempts while throttled are not recorded, so the lock ends ``window`` after the
    attacker stops and never locks the real owner out for good.
    """
    email = normalise_email(email)
    for column, value, limit in (
        (LoginAttempt.email, email, limits.per_account),
        (LoginAttempt.address, address, limits.per_address),
    ):
        wait = _retry_after(session, column, value, limit, now, limits.window)
        if wait is not None:
            raise LoginThrottled(wait)

    user = session.scalar(select(User).where(User.email == email))
    if user is None:
        User(password_hash=_DUMMY_HASH).check_password(password)
        ok = False
    else:
        ok = user.check_password(password) and user.active
    session.add(LoginAttempt(at=now, email=email, address=address, success=ok))
    session.commit()
    if not ok:
        if user is not None and not user.active and user.check_password(password):
            raise DomainError("This account has been deactivated. Ask a teammate to reactivate it.")
        raise DomainError("Wrong e-mail or password.")
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


def set_password(session: Session, user: User, password: str) -> None:
    """Set a new password; every other session of that user ends."""
    validate_password(password)
    user.set_password(password)
    session.commit()


def set_active(session: Session, user: User, active: bool, acting: User) -> None:
    """Deactivate or reactivate a teammate (never oneself, never the last active user)."""
    if user.id == acting.id and not active:
        raise DomainError("You cannot deactivate your own account.")
    if not active:
        others = session.scalar(
            select(func.count()).select_from(User).where(User.active.is_(True), User.id != user.id)
        )
        if not others:
            raise DomainError("At least one account must stay active.")
        user.session_token = new_token()  # ends their sessions on the next request
    user.active = active
    session.commit()


def update_profile(session: Session, user: User, name: str, timezone: str) -> None:
    """Change the name used to sign messages and the time zone used to show times."""
    user.name = name.strip()
    user.timezone = timezone
    session.commit()
