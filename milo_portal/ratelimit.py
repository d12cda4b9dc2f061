"""Rate limits counted in the database, so every worker process shares them."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from .models import RateHit


@dataclass(frozen=True)
class Limit:
    """At most ``count`` hits per ``window`` for one key."""

    key: str
    count: int
    window: timedelta


def retry_after(session: Session, limits: list[Limit], now: datetime) -> timedelta | None:
    """How long until every limit has room again, or None if all have room now."""
    waits = []
    for limit in limits:
        recent = session.scalars(
            select(RateHit.at).where(RateHit.key == limit.key[:300], RateHit.at > now - limit.window)
            .order_by(RateHit.at.desc()).limit(limit.count)).all()
        if len(recent) >= limit.count:
            # The oldest of the last ``count`` hits must leave the window first.
            waits.append(recent[-1] + limit.window - now)
    return max(waits) if waits else None


def hit(session: Session, limits: list[Limit], now: datetime) -> None:
    """Count one hit against each limit (the caller commits, in its write unit)."""
    session.add_all([RateHit(key=limit.key[:300], at=now) for limit in limits])


def forget_before(session: Session, before: datetime) -> int:
    """Delete hits older than any window (housekeeping)."""
    return session.execute(delete(RateHit).where(RateHit.at < before)).rowcount or 0


def minutes(wait: timedelta) -> int:
    """A wait rounded up to whole minutes, for people."""
    return max(1, int((wait.total_seconds() + 59) // 60))


