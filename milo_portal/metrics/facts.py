"""Each candidate's facts for the Metrics page (``metrics_fact``), recomputed when stale.

Triggers (migration 0017_metrics_facts) put a candidate in ``metrics_stale`` in the same
transaction as every change a fact depends on; on SQLite, new events and messages are the
rows above ``metrics_mark``'s ids instead (0018_metrics_marks), which ``absorb`` turns into
marks first. ``refresh`` claims stale candidates a chunk at
a time and writes their rows again from the candidate, their events, answers and messages,
each chunk one short write unit (rule 4 of ``transactions``). The page refreshes before it
reads, so its figures are of the data as it is; the scheduler's tick refreshes in the
background, so the page rarely has anything left to do.

The facts follow ``definitions``: the stage facts are the bits of ``flags``
(``definitions.FACT_BITS``), and ``stage_conditions`` turns them into the figures.
"""
from __future__ import annotations

import time
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import and_, bindparam, case, delete, func, insert, literal, or_, select
from sqlalchemy.orm import Session, aliased

from ..models import (Answer, Candidate, Event, Message, MessageStatus, MetricsAnswer, MetricsFact, MetricsMark,
                      MetricsStale, Stage)
from ..transactions import write_unit
from . import definitions as d

C, F, S = Candidate, MetricsFact, MetricsStale
# Candidates recomputed per write unit: 10-20 ms of lock on this kind of machine (100 held it
# 40-80 ms idle and more under load, which showed in the public pages' 99th percentile).
CHUNK = 25


def refresh(session: Session, seconds: float | None = None) -> bool:
    """Recompute stale facts in write units of ``CHUNK`` candidates: all of them, or for
    about ``seconds`` (then the rest waits for the next call). True when none is left stale."""
    if session.scalar(select(S.candidate_id).limit(1)) is None and not _behind(session):
        return True  # decided by a read: a page with nothing stale writes nothing
    started = time.monotonic()
    absorb(session)
    while True:
        with write_unit(session) as unit:
            ids = _claim(unit)
            if ids:
                _recompute(unit, ids)
        if len(ids) < CHUNK:
            return True
        if seconds is not None and time.monotonic() - started >= seconds:
            return False


# (table, the rows of it a fact reads) whose new rows SQLite marks by id (``absorb``).
_MARKED = (("event", Event, Event.type.in_(d.FACT_EVENT_TYPES)), ("message", Message, None))
# Rows read per write unit when absorbing: a 10,000-row upload's events take a few units.
ABSORB_ROWS = 20_000


def _behind(session: Session) -> bool:
    """On SQLite, whether an event or message was added since the last ``absorb`` (a read)."""
    if session.get_bind().dialect.name != "sqlite":
        return False
    marks = dict(session.execute(select(MetricsMark.name, MetricsMark.last_id)).all())
    return any((session.scalar(select(func.max(table.id))) or 0) > marks.get(name, 0)
               for name, table, _ in _MARKED)


def absorb(session: Session) -> None:
    """On SQLite: mark stale the candidates of the events and messages added since the last
    call (their ids are above ``metrics_mark``'s), then move the marks; in write units of at
    most ``ABSORB_ROWS`` ids. PostgreSQL's triggers mark those rows as they are inserted.

    Within a write unit no other writer adds rows, and a new row's id is one above the
    highest in use; when the highest rows are deleted, a trigger lowers the mark to the
    highest id left (migration 0018), so an id handed out again is read too.
    """
    if session.get_bind().dialect.name != "sqlite":
        return
    for name, table, condition in _MARKED:
        while True:
            with write_unit(session) as unit:
                mark = unit.scalar(select(MetricsMark.last_id).where(MetricsMark.name == name))
                if mark is None:  # (the migration makes both rows; a database emptied by hand has none)
                    unit.add(MetricsMark(name=name, last_id=0))
                    mark = 0
                top = unit.scalar(select(func.max(table.id))) or 0
                if top <= mark:
                    break
                upto = min(top, mark + ABSORB_ROWS)
                rows = select(table.candidate_id).distinct().where(
                    table.id > mark, table.id <= upto, table.candidate_id.is_not(None),
                    *([condition] if condition is not None else []),
                    table.candidate_id.not_in(select(S.candidate_id)))
                unit.execute(insert(S).from_select(["candidate_id"], rows))
                unit.execute(MetricsMark.__table__.update().where(MetricsMark.name == name).values(last_id=upto))
            if upto == top:
                break


def stale_count(session: Session) -> int:
    """How many candidates' facts wait to be recomputed."""
    return session.scalar(select(func.count()).select_from(S))


def _claim(session: Session) -> list[int]:
    """Take a chunk of candidates out of ``metrics_stale`` and return them.

    Claimed first, computed after: on PostgreSQL a change committed meanwhile either waits
    for this unit (its trigger's upsert needs the row) and marks the candidate again after
    it, or committed before the claim and is read by the computing statements that follow.

    A row that another transaction holds (a writer still open that marked it) is skipped, not
    waited for: that writer may be about to mark a candidate this unit has claimed, and each
    would wait for the other until PostgreSQL aborted one ("deadlock detected"). The skipped
    candidate stays stale, and a later refresh reads its change once committed. (SQLite has
    no row locks: a write unit is the only writer, and the clause is not rendered there.)
    """
    chunk = (select(S.candidate_id).order_by(S.candidate_id).limit(CHUNK)
             .with_for_update(skip_locked=True).scalar_subquery())
    return list(session.scalars(delete(S).where(S.candidate_id.in_(chunk)).returning(S.candidate_id)
                                .execution_options(synchronize_session=False)))


def _any(condition):
    return func.max(case((condition, 1), else_=0))


_invite_message = aliased(Message)
_FACTS = (
    select(C.id, C.agent_id, C.source, C.source_detail, C.channel, C.stage, C.timezone, C.email, C.device_class,
           C.created_at, C.invited_at, C.clicked_at, C.visited_at, C.started_at, C.completed_at,
           _any(Event.type == "opened").label("opened_event"),
           _any(Event.type == "machine_opened").label("machine_event"),
           # A failure or bounce of the invite itself (a reminder's failure says nothing of the invite).
           _any(and_(Event.type.in_(("failed", "bounced")), _invite_message.kind == "invite")).label("invite_failed"),
           func.coalesce(func.sum(case((and_(Event.type.in_(d.FOLLOWUP_TYPES),
                                             or_(C.completed_at.is_(None), Event.at < C.completed_at)), 1),
                                       else_=0)), 0).label("followups"),
           select(func.count()).where(Answer.candidate_id == C.id).correlate(C).scalar_subquery().label("answers"),
           select(Message.channel + literal("/") + func.coalesce(Message.variant, "A"))
           .where(Message.candidate_id == C.id, Message.kind == "invite", Message.step == 1)
           .correlate(C).scalar_subquery().label("variant"))
    .select_from(C)
    .outerjoin(Event, and_(Event.candidate_id == C.id, Event.type.in_(d.FACT_EVENT_TYPES)))
    .outerjoin(_invite_message, _invite_message.id == Event.message_id)
    .where(C.id.in_(bindparam("ids", expanding=True)))
    .group_by(C.id)
)

MESSAGE_CHANNELS = ("email", "sms", "whatsapp")
MESSAGE_FIGURES = ("messages", "sent", "failed", "temporary")
DELIVERY_COLUMNS = tuple(f"{channel}_{figure}" for channel in MESSAGE_CHANNELS for figure in MESSAGE_FIGURES)
_WRITE = insert(F).values(candidate_id=bindparam("b_id"), **{column: bindparam("b_" + column) for column in (
    "entered_at", "agent_id", "source", "source_detail", "channel", "flags", "heat", "bucket", "device",
    "variant", "followups", "answers", "invite_click", "click_start", "start_complete",
    "invite_complete", "email_domain") + DELIVERY_COLUMNS})


def _count(condition):
    return func.sum(case((condition, 1), else_=0))


# Per candidate and channel: messages meant to go (not cancelled or suppressed), sent, failed
# for good, failed for a while (retried or an error kept) — the Metrics page's deliverability.
_DELIVERY = (
    select(Message.candidate_id, Message.channel, func.count().label("messages"),
           _count(Message.sent_at.is_not(None)).label("sent"),
           _count(Message.status == MessageStatus.FAILED).label("failed"),
           _count(and_(Message.status != MessageStatus.FAILED,
                       or_(Message.attempts > 1, Message.last_error.is_not(None)))).label("temporary"))
    .where(Message.candidate_id.in_(bindparam("ids", expanding=True)),
           Message.status.not_in((MessageStatus.CANCELLED, MessageStatus.SUPPRESSED)))
    .group_by(Message.candidate_id, Message.channel)
)


_ANSWERS = (select(Answer.id, Answer.candidate_id, Answer.position, Answer.answered_at)
            .where(Answer.candidate_id.in_(bindparam("ids", expanding=True)))
            .order_by(Answer.candidate_id, Answer.position))


def _recompute(session: Session, ids: list[int]) -> None:
    rows = session.execute(_FACTS, {"ids": ids}).all()
    values = [facts_of(row) for row in rows]
    by_id = {v["b_id"]: v for v in values}
    for row in session.execute(_DELIVERY, {"ids": ids}):
        if row.channel in MESSAGE_CHANNELS and row.candidate_id in by_id:
            for figure in MESSAGE_FIGURES:
                by_id[row.candidate_id][f"b_{row.channel}_{figure}"] = int(getattr(row, figure) or 0)
    conn = session.connection()
    # Written again whole (a candidate deleted meanwhile has no row to write, and its old
    # rows went with it).
    conn.execute(delete(MetricsAnswer).where(MetricsAnswer.candidate_id.in_(ids)))
    conn.execute(delete(F).where(F.candidate_id.in_(ids)))
    if values:
        conn.execute(_WRITE, values)
    spent = answers_of(session.execute(_ANSWERS, {"ids": ids}).all(), {row.id: row for row in rows}, values)
    if spent:
        conn.execute(insert(MetricsAnswer), spent)


def answers_of(answers, candidates: dict, values: list[dict]) -> list[dict]:
    """Each answer's time spent: from the previous answer (by position), or the start, to it.

    Only for candidates who started (an answer has no start to count from otherwise).
    """
    filters = {v["b_id"]: v for v in values}
    out, previous, last = [], None, None
    for answer in answers:
        candidate = candidates.get(answer.candidate_id)
        if candidate is None or candidate.started_at is None:
            continue
        if answer.candidate_id != last:
            previous, last = candidate.started_at, answer.candidate_id
        fact = filters[answer.candidate_id]
        out.append({"answer_id": answer.id, "candidate_id": answer.candidate_id, "agent_id": fact["b_agent_id"],
                    "position": answer.position, "spent": _seconds(previous, answer.answered_at),
                    "entered_at": fact["b_entered_at"], "source": fact["b_source"],
                    "source_detail": fact["b_source_detail"], "channel": fact["b_channel"]})
        previous = answer.answered_at
    return out


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start is not None and end is not None else None


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def facts_of(row) -> dict:
    """One candidate's fact row (bound parameters of ``_WRITE``) from its ``_FACTS`` row."""
    invited = row.invited_at is not None
    completed = row.completed_at is not None
    started = row.started_at is not None or completed
    clicked = row.clicked_at is not None or started
    late = invited and _seconds(row.created_at, row.invited_at) > d.LATE_INVITE_HOURS * 3600
    raw = {"invited": invited, "clicked": clicked, "started": started, "completed": completed,
           "visited": row.visited_at is not None, "opened_event": row.opened_event == 1,
           "machine_event": row.machine_event == 1, "invite_failed": row.invite_failed == 1,
           "expired": row.stage == Stage.EXPIRED, "opted_out": row.stage == Stage.OPTED_OUT, "late": late}
    flags = sum(1 << d.FACT_BITS.index(name) for name, value in raw.items() if value)
    heat = bucket = None
    if invited:
        local = row.invited_at.astimezone(_zone(row.timezone))
        heat = local.weekday() * 24 + local.hour
        flags |= 1 << d.FACT_BITS.index("friday") if local.weekday() == 4 else 0
        if completed:
            spent = _seconds(row.invited_at, row.completed_at)
            bucket = next((i for i, (limit, _) in enumerate(d.BUCKETS) if limit and spent < limit), len(d.BUCKETS) - 1)
    entered = row.invited_at if invited else (row.clicked_at or row.started_at or row.completed_at)
    email = row.email or ""
    return {
        "b_id": row.id, "b_entered_at": entered, "b_agent_id": row.agent_id, "b_source": row.source,
        "b_source_detail": row.source_detail, "b_channel": row.channel, "b_flags": flags, "b_heat": heat,
        "b_bucket": bucket, "b_device": row.device_class or "unknown", "b_variant": row.variant,
        "b_followups": min(int(row.followups or 0), 3), "b_answers": int(row.answers or 0),
        "b_invite_click": _seconds(row.invited_at, row.clicked_at),
        "b_click_start": _seconds(row.clicked_at, row.started_at) if invited else None,
        "b_start_complete": _seconds(row.started_at, row.completed_at),
        "b_invite_complete": _seconds(row.invited_at, row.completed_at),
        "b_email_domain": email.split("@", 1)[1].lower() if "@" in email else None,
        **{"b_" + column: 0 for column in DELIVERY_COLUMNS},
    }
