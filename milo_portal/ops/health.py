"""What /healthz and /ops/metrics report: the database, the scheduler, the outbox, backups."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ..models import Heartbeat, Message, MessageStatus
from .settings import get_ops_settings

log = logging.getLogger(__name__)
TICK = "tick"


@dataclass
class Health:
    """The figures of one health check (ages in seconds; None when unknown or not applicable)."""

    database_ok: bool
    tick_age: float | None = None
    tick_stale: bool = False
    backlog: int | None = None
    oldest_due_age: float | None = None
    by_status: dict | None = None
    last_backup_at: datetime | None = None
    last_backup_size: int | None = None
    last_backup_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.database_ok and not self.tick_stale


def beat(session: Session, now: datetime, holder: str, name: str = TICK) -> None:
    """Record that ``name`` (the tick) completed at ``now``; the caller's unit commits it.

    One upsert: two workers beating at once for the first time cannot collide.
    """
    dialect = session.get_bind().dialect.name
    stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(Heartbeat).values(name=name, at=now, holder=holder)
    session.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={"at": now, "holder": holder},
                                               where=Heartbeat.at < now))


def check(session: Session, now: datetime, max_tick_age: int, scheduler_expected: bool) -> Health:
    """Read every figure; a database error makes ``database_ok`` false instead of raising.

    The tick is stale when a scheduler is expected (MILO_SCHEDULER on) and no process has
    completed one for ``max_tick_age`` seconds, or ever.
    """
    try:
        session.execute(text("SELECT 1"))
        beat_row = session.get(Heartbeat, TICK)
        due = (Message.status == MessageStatus.SCHEDULED, Message.scheduled_for <= now)
        backlog, oldest = session.execute(select(func.count(), func.min(Message.scheduled_for)).where(*due)).one()
        by_status = dict(session.execute(select(Message.status, func.count()).group_by(Message.status)).all())
        ops = get_ops_settings(session)
        session.rollback()
    except SQLAlchemyError:
        log.exception("Health check: the database does not answer")
        session.rollback()
        return Health(database_ok=False)
    tick_age = (now - beat_row.at).total_seconds() if beat_row else None
    stale = scheduler_expected and (tick_age is None or tick_age > max_tick_age)
    return Health(database_ok=True, tick_age=tick_age, tick_stale=stale, backlog=backlog,
                  oldest_due_age=(now - oldest).total_seconds() if oldest else 0.0, by_status=by_status,
                  last_backup_at=ops.last_backup_at, last_backup_size=ops.last_backup_size,
                  last_backup_error=ops.last_backup_error)


def as_json(health: Health) -> dict:
    """The /healthz document."""
    if not health.database_ok:
        return {"status": "error", "database": "unreachable"}
    return {
        "status": "ok" if health.ok else "stale",
        "database": "ok",
        "scheduler": {"last_tick_age_seconds": None if health.tick_age is None else round(health.tick_age, 1),
                      "stale": health.tick_stale},
        "outbox": {"due": health.backlog, "oldest_due_age_seconds": round(health.oldest_due_age or 0.0, 1)},
        "backup": {"last_at": health.last_backup_at.isoformat(timespec="seconds") if health.last_backup_at else None,
                   "last_size_bytes": health.last_backup_size, "last_error": health.last_backup_error},
    }
