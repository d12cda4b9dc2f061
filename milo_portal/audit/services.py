"""Writing, reading, exporting and purging audit log entries."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Iterator
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..candidates.services import csv_safe
from ..headers import one_line
from ..models import AuditEntry, User
from ..transactions import delete_in_units, read_only

# Kinds the app records, with a label for the filter. Other kinds are accepted as they come
# (an area added later records its own) and appear in the filter once they exist.
KINDS = {
    "login": "Logged in",
    "login_failed": "Failed login",
    "logout": "Logged out",
    "team_added": "Teammate added",
    "team_password": "Password changed",
    "team_active": "Teammate activated or deactivated",
    "team_sessions": "Sessions ended",
    "template_saved": "Template edited",
    "template_restored": "Template version restored",
    "template_variant": "Template variant added or changed",
    "settings_changed": "Settings changed",
    "candidate_deleted": "Candidate deleted",
    "candidate_export": "Candidates exported",
    "retention_erased": "Personal data erased (retention)",
    "audit_purged": "Old audit entries removed",
    "backup": "Backup",
    "restore": "Restore",
    "bulk_upload": "Bulk upload",
    "bulk_undo": "Bulk upload undone",
    "api_key": "API key change",
    "webhook_secret": "Webhook secret change",
}
SYSTEM = "system"
PAGE_SIZE = 100
PURGE_CHUNK = 1000


def actor_label(actor) -> str:
    """How an actor is written in the log: "Name <email>" for a user, the text otherwise."""
    if actor is None:
        return SYSTEM
    if isinstance(actor, User):
        return f"{actor.name} <{actor.email}>"
    return str(actor)


def record(session: Session, actor, kind: str, detail: str = "", *, address: str | None = None,
           now: datetime | None = None) -> AuditEntry:
    """Add one audit entry to ``session`` (the caller commits it with the change it describes).

    ``actor``: the acting ``User``, a text such as ``"API key ci-sync"``, or None for the
    system (the scheduler, a command). ``detail`` must hold ids and names of things, never
    secrets, tokens or message bodies. ``now`` defaults to the clock.
    """
    from ..clock import now as clock_now

    entry = AuditEntry(
        at=now or clock_now(), actor_id=actor.id if isinstance(actor, User) else None,
        actor=one_line(actor_label(actor))[:300], kind=kind[:40], detail=one_line(detail or "")[:1000],
        address=(address or None) and address[:64])
    session.add(entry)
    return entry


@dataclass
class AuditFilters:
    """The audit page's filters: person, kind, a day range (in the viewer's zone), and a cursor."""

    actor_id: int | None = None
    kind: str | None = None
    since: date | None = None
    until: date | None = None
    before_id: int | None = None
    tz: str = "UTC"


def _query(filters: AuditFilters):
    query = select(AuditEntry)
    if filters.actor_id:
        query = query.where(AuditEntry.actor_id == filters.actor_id)
    if filters.kind:
        query = query.where(AuditEntry.kind == filters.kind)
    zone = ZoneInfo(filters.tz)
    if filters.since:
        query = query.where(AuditEntry.at >= datetime.combine(filters.since, time(), zone))
    if filters.until:
        query = query.where(AuditEntry.at < datetime.combine(filters.until + timedelta(days=1), time(), zone))
    return query


def entries(session: Session, filters: AuditFilters) -> tuple[list[AuditEntry], int | None]:
    """One page of entries, newest first, and the cursor of the next (older) page or None."""
    query = _query(filters)
    if filters.before_id:
        query = query.where(AuditEntry.id < filters.before_id)
    rows = session.scalars(query.order_by(AuditEntry.id.desc()).limit(PAGE_SIZE + 1)).all()
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return rows, (rows[-1].id if more and rows else None)


def kinds_in_use(session: Session) -> list[tuple[str, str]]:
    """(kind, label) for the filter: the known kinds plus any other kind already recorded."""
    found = set(session.scalars(select(AuditEntry.kind).distinct()))
    return [(k, label) for k, label in KINDS.items()] + [(k, k.replace("_", " ")) for k in sorted(found - set(KINDS))]


def export_csv(session: Session, filters: AuditFilters) -> Iterator[str]:
    """Stream the matching entries as CSV (oldest first, formula cells neutralised)."""
    read_only(session)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["id", "at (UTC)", "person", "kind", "detail", "address"])
    query = _query(filters).order_by(AuditEntry.id)
    for e in session.scalars(query.execution_options(yield_per=1000)):
        writer.writerow([csv_safe(v) for v in (e.id, e.at.isoformat(timespec="seconds"), e.actor, e.kind,
                                                  e.detail, e.address)])
        if buf.tell() > 64 * 1024:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


def purge(session: Session, now: datetime, keep_days: int) -> int:
    """Delete entries older than ``keep_days``, in short units; return how many went."""
    cutoff = now - timedelta(days=keep_days)
    return delete_in_units(session, AuditEntry, AuditEntry.at < cutoff, PURGE_CHUNK)


def snapshot(obj, names) -> dict:
    """The values of ``names`` on ``obj``, to compare after a change (see :func:`describe_changes`)."""
    return {name: getattr(obj, name) for name in names}


def describe_changes(before: dict, obj) -> str:
    """"name old → new" for each value of ``before`` that differs on ``obj`` now ("" if none)."""
    return "; ".join(f"{name} {old!r} → {getattr(obj, name)!r}" for name, old in before.items()
                     if getattr(obj, name) != old)


def export_detail(filters) -> str:
    """What a candidates export covered, without the search text (it may be a person's name)."""
    agent_id, stage, source, channel = filters.valid()
    parts = [f"{len(filters.ids)} selected" if filters.ids else "all matching"]
    parts += [f"{name} {value}" for name, value in (("interview", agent_id), ("stage", stage), ("source", source),
                                                    ("channel", channel)) if value]
    if filters.q:
        parts.append("with a search")
    return "candidates CSV: " + ", ".join(parts)
