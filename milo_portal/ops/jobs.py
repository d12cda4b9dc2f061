"""What the scheduler's tick does after dispatching: the heartbeat, the daily jobs
(retention, audit purge, old login attempts), the nightly backup and the Metrics facts.

Each periodic job runs in one process per period across all workers: its ``job_lease``
row is taken by one conditional UPDATE (``until`` in the past), which also sets when it
may run next. Work is done in short write units, never with a transaction open around a
file copy or ``pg_dump``.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

from flask import current_app
from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from .. import audit
from ..auth.services import purge_login_attempts
from ..followups.services import ensure_lease_row
from ..models import JobLease
from ..transactions import end_transaction, write_unit
from . import backup, health, retention
from .logs import event
from .settings import get_ops_settings, ops_settings_for_update

log = logging.getLogger(__name__)
DAILY, BACKUP = "daily", "backup"


def take_until(session: Session, name: str, holder: str, now: datetime, until: datetime) -> bool:
    """Take the named job's lease when it is free (``until`` passed) and hold it to ``until``."""
    with write_unit(session) as work:
        ensure_lease_row(work, name)
        return work.execute(
            update(JobLease).where(JobLease.name == name, or_(JobLease.until.is_(None), JobLease.until <= now))
            .values(holder=holder, until=until).execution_options(synchronize_session=False)).rowcount == 1


def _release_now(session: Session, name: str, now: datetime) -> None:
    """Let the next tick run the job again (it stopped at its pass limit)."""
    with write_unit(session) as work:
        work.execute(update(JobLease).where(JobLease.name == name).values(until=now)
                     .execution_options(synchronize_session=False))


def after_tick(session: Session, now: datetime, holder: str) -> None:
    """The heartbeat, then the daily jobs and the nightly backup when they are due, then the
    Metrics facts that changed."""
    with write_unit(session) as work:
        health.beat(work, now, holder)
    for job in (daily, nightly_backup, metrics_facts):
        try:
            job(session, now, holder)
        except Exception:  # one job's trouble must not stop the others, nor the next tick
            session.rollback()
            log.exception("Periodic job %s failed; it runs again when its lease ends", job.__name__)


def daily(session: Session, now: datetime, holder: str) -> bool:
    """Once a day: erase personal data past retention, delete old audit entries and login
    attempts the throttling no longer reads. False if not due."""
    if not take_until(session, DAILY, holder, now, now + timedelta(days=1)):
        return False
    settings = get_ops_settings(session)
    days, audit_days = settings.retention_days, settings.audit_retention_days
    end_transaction(session)
    erased, more = retention.erase_expired_data(session, now, days)
    if erased:
        with write_unit(session) as work:
            audit.record(work, None, "retention_erased",
                         f"{erased} candidate(s) erased: their interview ended more than {days} days ago", now=now)
        event("retention_erased", count=erased, days=days)
    purged = audit.services.purge(session, now, audit_days)
    if purged:
        with write_unit(session) as work:
            audit.record(work, None, "audit_purged", f"{purged} entries older than {audit_days} days removed", now=now)
    attempts = purge_login_attempts(session, now, timedelta(minutes=current_app.config["MILO_LOGIN_WINDOW_MINUTES"]))
    if attempts:
        event("login_attempts_purged", count=attempts)
    if more:
        _release_now(session, DAILY, now)  # a backlog: the next tick goes on with it
    return True


# How long a tick recomputes stale Metrics facts (the rest waits for the next tick).
METRICS_REFRESH_SECONDS = 2.0


def metrics_facts(session: Session, now: datetime, holder: str) -> bool:
    """Recompute the Metrics facts that changed since the last tick, in short units, so the
    page rarely has anything left to do. False when some are left for the next tick."""
    from ..metrics import facts

    end_transaction(session)
    return facts.refresh(session, seconds=METRICS_REFRESH_SECONDS)


def next_backup_time(now: datetime, hour: int) -> datetime:
    """The next ``hour``:00 UTC after ``now``."""
    at = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    return at if at > now else at + timedelta(days=1)


def nightly_backup(session: Session, now: datetime, holder: str) -> bool:
    """When enabled and due: back up into MILO_BACKUP_DIR, keep the newest N, record the outcome."""
    settings = get_ops_settings(session)
    if not settings.backup_enabled:
        end_transaction(session)
        return False
    keep, hour = settings.backup_keep, settings.backup_hour
    end_transaction(session)
    if not take_until(session, BACKUP, holder, now, next_backup_time(now, hour)):
        return False
    directory = Path(current_app.config["MILO_BACKUP_DIR"])
    url = current_app.config["SQLALCHEMY_DATABASE_URI"]
    try:
        directory.mkdir(parents=True, exist_ok=True)
        outcome = backup.take_backup(url, directory, now)
        if outcome.path is None:
            raise backup.BackupError("pg_dump is not installed on this server: " + "; ".join(outcome.commands))
        backup.prune(directory, keep)
    except (backup.BackupError, OSError) as err:
        log.error("Nightly backup failed: %s", err)
        with write_unit(session) as work:
            row = ops_settings_for_update(work)
            row.last_backup_error, row.last_backup_error_at = str(err)[:1000], now
        return True
    record_backup(session, now, outcome, "nightly")
    return True


def record_backup(session: Session, now: datetime, outcome, origin: str) -> None:
    """Record a finished backup: Settings, /healthz and /ops/metrics show the last one, and the
    audit log has an entry. The same for a nightly backup and one from the command line, so
    a team that backs up from cron is not told "none yet" (nor alerted) by its monitoring."""
    with write_unit(session) as work:
        row = ops_settings_for_update(work)
        row.last_backup_at, row.last_backup_size, row.last_backup_path = now, outcome.size, str(outcome.path)[:1000]
        row.last_backup_error = row.last_backup_error_at = None
        audit.record(work, None, "backup", f"{outcome.path.name} ({outcome.size:,} bytes), {origin}", now=now)
    event("backup", size=outcome.size, file=outcome.path.name, origin=origin)
