"""The follow-up engine: the planner inserts due follow-ups, the dispatcher claims and sends.

Correctness never depends on there being one scheduler: several processes may plan and
dispatch at once. The planner's inserts are ``ON CONFLICT DO NOTHING`` on the unique
(candidate, kind, step), and the dispatcher claims each message with one conditional
UPDATE (PostgreSQL: ``FOR UPDATE SKIP LOCKED``) committed before any network call.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import and_, case, exists, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, joinedload

from .. import ratelimit
from ..candidates import stages
from ..candidates.services import start_deadline_clock
from ..messaging import channels
from ..messaging import services as messaging
from ..models import (Agent, Candidate, JobLease, Message, MessageStatus, Settings, Stage, candidate_visible,
                      hidden_candidate_ids)
from ..ops import logs as ops_logs
from ..ops.shutdown import stopping
from ..settings.services import get_settings
from ..transactions import READ_ONLY, assert_no_transaction, end_transaction, write_unit
from .rules import (AUTOMATIC_KINDS, FOLLOW_UP_KINDS, Rules, backoff, in_window, next_allowed, nudge_moment,
                    reminder_moment, rules_for)

log = logging.getLogger(__name__)

OUTCOME_COMMIT_EVERY = 10
REMINDABLE = (Stage.INVITED, Stage.OPENED)  # invited, link not clicked yet
LIVE = (Stage.ADDED, Stage.INVITED, Stage.OPENED, Stage.CLICKED, Stage.STARTED)


# --- planning -----------------------------------------------------------------------------

@dataclass
class PlanResult:
    """What one planning pass did (``skipped``: another process holds the planner lease)."""

    expired: int = 0
    planned: Counter = field(default_factory=Counter)
    skipped: bool = False

    def summary(self) -> str:
        if self.skipped:
            return "planning: another process plans this tick"
        parts = [f"{n} {kind}" for kind, n in sorted(self.planned.items()) if n]
        return f"planned: {', '.join(parts) or 'nothing'}; expired: {self.expired}"


# Rows per write unit. Inserting 500 outbox rows or expiring 200 candidates holds SQLite's
# write lock for a few milliseconds (well under the ~50 ms a unit may take); the reads that
# find them run before, in deferred transactions that lock nothing.
PLAN_CHUNK = 500
EXPIRE_CHUNK = 200
PASS_LIMIT = 5000  # per rule and per pass: a larger backlog is finished by the next ticks


def _insert_ignore(session: Session, rows: list[dict]) -> int:
    """Insert outbox rows, skipping any (candidate, kind, step) that exists: races are harmless."""
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    table = Message.__table__
    stmt = (pg_insert(table) if dialect == "postgresql" else sqlite_insert(table)).on_conflict_do_nothing(
        index_elements=["candidate_id", "kind", "step"]).returning(table.c.id)
    # RETURNING gives back only the rows really inserted (rowcount is not reliable for
    # batched inserts on every driver).
    return len(session.execute(stmt, rows).all())


class _Units:
    """How a planning pass uses transactions.

    A real pass reads in deferred transactions and writes in short units of at most
    PLAN_CHUNK rows, each committed at once. A dry run (``commit=False``) keeps everything in
    the caller's one transaction, which the caller rolls back.
    """

    def __init__(self, session: Session, commit: bool) -> None:
        self.session, self.commit = session, commit

    def read(self, query) -> list:
        if not self.commit:
            return self.session.execute(query).all()
        end_transaction(self.session)
        self.session.connection(execution_options={READ_ONLY: True})
        rows = self.session.execute(query).all()
        end_transaction(self.session)
        return rows

    @contextmanager
    def write(self):
        if not self.commit:
            yield self.session
            return
        with write_unit(self.session) as session:
            yield session

    def insert(self, rows: list[dict]) -> int:
        """Insert outbox rows in units of PLAN_CHUNK; return how many were new."""
        inserted = 0
        for i in range(0, len(rows), PLAN_CHUNK):
            with self.write() as session:
                inserted += _insert_ignore(session, rows[i:i + PLAN_CHUNK])
        return inserted


def _followups_sent(candidate_id_col):
    """SQL: how many follow-ups a candidate has had or has queued (for the cap)."""
    return (select(func.count()).select_from(Message)
            .where(Message.candidate_id == candidate_id_col, Message.kind.in_(FOLLOW_UP_KINDS),
                   Message.status.in_((MessageStatus.SENT, MessageStatus.SCHEDULED, MessageStatus.SENDING,
                                       MessageStatus.IN_DOUBT)))
            .scalar_subquery())


def _has_message(kind: str, step: int, sent: bool = False):
    query = exists().where(Message.candidate_id == Candidate.id, Message.kind == kind, Message.step == step)
    return query.where(Message.status == MessageStatus.SENT) if sent else query


def _opted_out_of_channel():
    return or_(and_(Candidate.channel == "email", Candidate.opted_out_email.is_(True)),
               and_(Candidate.channel == "sms", Candidate.opted_out_sms.is_(True)),
               and_(Candidate.channel == "whatsapp", Candidate.opted_out_whatsapp.is_(True)))


def expire_due(session: Session, now: datetime, commit: bool = True) -> int:
    """Candidates whose deadline passed become expired (one event each); their queue is cancelled.

    Found in a read, then expired in units of EXPIRE_CHUNK; each move is a conditional UPDATE,
    so a candidate who completed in between is left alone.
    """
    units = _Units(session, commit)
    ids = [row[0] for row in units.read(select(Candidate.id).where(
        Candidate.stage.in_(LIVE), Candidate.deadline_at.is_not(None), Candidate.deadline_at <= now,
        Candidate.erased_at.is_(None), candidate_visible()).limit(PASS_LIMIT))]
    moved = 0
    for i in range(0, len(ids), EXPIRE_CHUNK):
        chunk = ids[i:i + EXPIRE_CHUNK]
        with units.write() as work:
            for candidate in work.scalars(select(Candidate).where(Candidate.id.in_(chunk))):
                if stages.move(work, candidate, Stage.EXPIRED, now, detail="deadline passed"):
                    moved += 1
            work.execute(update(Message).where(Message.candidate_id.in_(chunk),
                                               Message.status == MessageStatus.SCHEDULED)
                         .values(status=MessageStatus.CANCELLED, last_error="Deadline passed")
                         .execution_options(synchronize_session=False))
    return moved


def plan(session: Session, now: datetime, commit: bool = True) -> PlanResult:
    """Insert every follow-up that is due at ``now`` (found in SQL, not by loading everyone).

    With ``commit=False`` (a dry run) the caller's transaction holds it all and the caller
    rolls it back; otherwise the pass reads without locking and writes in short units.
    """
    units = _Units(session, commit)
    result = PlanResult(expired=expire_due(session, now, commit))
    settings = get_settings(session)
    # An archived interview shows "closed" on its links: nothing more is planned for it.
    agents = [row[0] for row in units.read(select(Agent).where(Agent.archived_at.is_(None)))]
    for agent in agents:
        rules = rules_for(settings, agent)
        _plan_reminders(units, agent, rules, now, result)
        _plan_nudges(units, agent, rules, now, result)
    if commit:
        with units.write() as work:  # housekeeping: rate-limit hits outlive every window by then
            ratelimit.forget_before(work, now - timedelta(days=1))
    else:
        session.flush()
    return result


def _base_query(agent: Agent, rules: Rules, now: datetime):
    return (select(Candidate.id, Candidate.timezone, Candidate.channel, Candidate.invited_at, Candidate.deadline_at)
            .where(Candidate.agent_id == agent.id, Candidate.erased_at.is_(None), candidate_visible(),
                   Candidate.channel != "link",
                   Candidate.deadline_at > now, ~_opted_out_of_channel(),
                   _followups_sent(Candidate.id) < rules.cap))


def _row(candidate_id: int, kind: str, step: int, channel: str, when: datetime, rule: str, now: datetime) -> dict:
    return {"candidate_id": candidate_id, "kind": kind, "step": step, "channel": channel, "manual": False,
            "immediate": False, "status": MessageStatus.SCHEDULED, "scheduled_for": when, "rule": rule,
            "attempts": 0, "last_error": None, "created_at": now}


def _plan_reminders(units: _Units, agent: Agent, rules: Rules, now: datetime, result: PlanResult) -> None:
    for step, hours in enumerate(rules.reminder_offsets, start=1):
        query = _base_query(agent, rules, now).where(
            Candidate.stage.in_(REMINDABLE), Candidate.invited_at <= now - timedelta(hours=hours),
            ~_has_message("reminder", step))
        if step > 1:
            # In order, and apart: reminder 2 only once reminder 1 has gone. Planning both in
            # one pass (a backlog) put two due rows in the outbox, and two workers or lanes
            # could each claim one and send them a second apart.
            query = query.where(_has_message("reminder", step - 1, sent=True))
        rows = []
        for cid, tz, channel, invited_at, deadline in units.read(query.limit(PASS_LIMIT)):
            moment = reminder_moment(invited_at, hours, deadline, tz, rules, now)
            if moment.when is None:
                continue
            rows.append(_row(cid, "reminder", step, channel, moment.when,
                             f"Reminder {step}: {hours} h after the invite, not clicked yet", now))
        result.planned["reminder"] += units.insert(rows)


# A nudge's moment is the latest allowed one before "deadline - lead", which a weekend or a
# closed window can put days earlier: candidates this much further out are looked at too.
NUDGE_LOOKAHEAD = timedelta(days=7)
# A nudge is inserted once its moment is this close, so the row waits in the outbox for the
# exact minute instead of depending on a tick landing inside the last minutes of a window.
NUDGE_PLAN_AHEAD = timedelta(hours=24)


def _plan_nudges(units: _Units, agent: Agent, rules: Rules, now: datetime, result: PlanResult) -> None:
    plans = [("nudge", rules.nudge_lead)]
    if rules.final_nudge_lead:
        plans.append(("final_nudge", rules.final_nudge_lead))
    for kind, lead in plans:
        query = _base_query(agent, rules, now).where(
            Candidate.stage == Stage.STARTED, Candidate.deadline_at <= now + timedelta(hours=lead) + NUDGE_LOOKAHEAD,
            ~_has_message(kind, 1))
        rows = []
        for cid, tz, channel, _invited, deadline in units.read(query.limit(PASS_LIMIT)):
            moment = nudge_moment(deadline, lead, tz, rules, now)
            if moment.when is not None and now + NUDGE_PLAN_AHEAD < moment.when <= deadline - timedelta(hours=lead):
                continue  # its moment (the latest allowed one) is still far ahead: a later tick inserts it
            if moment.when is None:
                # No allowed moment before the deadline: recorded, so the outbox says why.
                row = _row(cid, kind, 1, channel, now, f"{lead} h before the deadline", now)
                row.update(status=MessageStatus.CANCELLED, last_error=moment.reason)
                rows.append(row)
                continue
            label = "Final nudge" if kind == "final_nudge" else "Nudge"
            rows.append(_row(cid, kind, 1, channel, moment.when,
                             f"{label}: {lead} h before the deadline, started not finished", now))
        result.planned[kind] += units.insert(rows)


# --- one planner per tick -------------------------------------------------------------------

PLANNER_LEASE = "planner"


def lease_holder() -> str:
    """This process's name in the lease table."""
    return f"{socket.gethostname()}:{os.getpid()}"[:120]


def ensure_lease_row(session: Session, name: str) -> None:
    """Create the named lease row when missing (migrations create the known ones).

    An insert that ignores a conflict: two workers on PostgreSQL creating it at once must
    not fail one of them with a duplicate key (a get-then-add would).
    """
    dialect = session.get_bind().dialect.name
    stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(JobLease).values(name=name)
    session.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))


def take_lease(session: Session, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
    """Take (or keep) the named lease until ``now + ttl``; False while another holder has it.

    One conditional UPDATE decides, so two processes asking at once cannot both win.
    """
    with write_unit(session) as work:
        ensure_lease_row(work, name)
        taken = work.execute(
            update(JobLease).where(JobLease.name == name,
                                   or_(JobLease.until.is_(None), JobLease.until <= now, JobLease.holder == holder))
            .values(holder=holder, until=now + ttl).execution_options(synchronize_session=False)).rowcount == 1
    return taken


# --- dispatching --------------------------------------------------------------------------

@dataclass
class Decision:
    """What the dispatcher does with one due message."""

    action: str  # send, move, cancel
    reason: str = ""
    when: datetime | None = None


def history(session: Session, candidate_ids: list[int]) -> dict[int, tuple[int, datetime | None]]:
    """Per candidate: follow-ups already gone (for the cap) and when the last message went (spacing)."""
    rows = session.execute(
        select(Message.candidate_id, func.count(case((Message.kind.in_(FOLLOW_UP_KINDS), 1))),
               func.max(Message.sent_at))
        .where(Message.candidate_id.in_(candidate_ids),
               Message.status.in_((MessageStatus.SENT, MessageStatus.IN_DOUBT)))
        .group_by(Message.candidate_id))
    return {cid: (done, last) for cid, done, last in rows}


def decide(session: Session, message: Message, candidate: Candidate, rules: Rules, now: datetime,
           past: tuple[int, datetime | None] | None = None) -> Decision:
    """Re-check a due message against the world as it is now (it may have changed since planning).

    ``past`` is the candidate's (follow-ups gone, last sent) when the caller has it already.
    """
    kind = message.kind
    if candidate.erased_at is not None:
        return Decision("cancel", "Candidate erased")
    if candidate.agent.archived_at is not None:
        return Decision("cancel", "The interview is archived")
    if getattr(candidate, f"opted_out_{message.channel}", False):
        return Decision("cancel", f"Opted out of {message.channel}")
    if candidate.stage in (Stage.COMPLETED, Stage.EXPIRED, Stage.OPTED_OUT):
        return Decision("cancel", f"Candidate {candidate.stage.replace('_', ' ')}")
    if candidate.deadline_at and candidate.deadline_at <= now:
        return Decision("cancel", "Deadline passed")
    if kind == "invite" and candidate.stage not in (Stage.ADDED, Stage.INVITED):
        return Decision("cancel", "Already opened their link")
    if kind == "reminder" and candidate.stage not in REMINDABLE:
        return Decision("cancel", "Clicked their link: no reminder needed")
    if kind in ("nudge", "final_nudge", "manual_nudge") and candidate.stage != Stage.STARTED:
        return Decision("cancel", "Only candidates who started and have not finished are nudged")
    done, last = past if past is not None else history(session, [candidate.id]).get(candidate.id, (0, None))
    if kind in AUTOMATIC_KINDS and done >= rules.cap:
        return Decision("cancel", f"Follow-up cap reached ({rules.cap})")
    if message.immediate:
        return Decision("send")
    # Spacing: never two messages too close to one person.
    manual = message.manual or kind == "link_resend"
    spacing = rules.spacing_manual if manual else rules.spacing_auto
    earliest = now
    if last is not None and last + spacing > now:
        earliest = last + spacing
    initial = kind == "invite" and message.step == 1
    if earliest == now and in_window(now, candidate.timezone, rules, initial):
        return Decision("send")
    when = next_allowed(earliest, candidate.timezone, rules, initial)
    if when is None:
        return Decision("cancel", "No day is allowed for sending in the settings")
    if candidate.deadline_at and when >= candidate.deadline_at:
        return Decision("cancel", "No moment in the send window before the deadline")
    why = "minimum spacing" if earliest > now else ("send days" if not in_window(now, candidate.timezone, rules, initial)
                                                    else "send window")
    return Decision("move", f"Moved to the next allowed moment ({why})", when)


@dataclass
class DispatchResult:
    """What one dispatch pass did, message by message."""

    sent: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    in_doubt: int = 0
    doubtful: list[str] = field(default_factory=list)  # sends whose outcome is unknown (now in doubt)
    would_send: list[str] = field(default_factory=list)
    down: set[str] = field(default_factory=set)  # channels that failed temporarily this pass

    def summary(self) -> str:
        return (f"sent {len(self.sent)}, moved {len(self.moved)}, cancelled {len(self.cancelled)}, "
                f"retrying {len(self.retried)}, failed {len(self.failed)}, now in doubt {self.in_doubt}")


def _describe(message: Message, candidate: Candidate) -> str:
    to = candidate.email if message.channel == "email" else candidate.phone
    who = candidate.name or to or f"candidate {candidate.id}"
    return f"#{message.id} {message.kind} {message.step} by {message.channel} to {who} <{to}>"


def mark_in_doubt(session: Session, now: datetime) -> int:
    """Claims whose lease ran out without an outcome: in doubt, never re-sent on their own."""
    result = session.execute(
        update(Message).where(Message.status == MessageStatus.SENDING, Message.lease_until < now)
        .values(status=MessageStatus.IN_DOUBT,
                last_error="Sending was interrupted: it may or may not have gone out")
        .execution_options(synchronize_session=False))
    session.commit()
    return result.rowcount or 0


def _sent_last_minute(session: Session, channel: str, now: datetime) -> int:
    return session.scalar(select(func.count()).select_from(Message).where(
        Message.channel == channel, Message.status == MessageStatus.SENT,
        Message.sent_at > now - timedelta(minutes=1))) or 0


def _due_ids(session: Session, now: datetime, channels_open: list[str], limit: int) -> list[int]:
    return list(session.scalars(
        select(Message.id).where(Message.status == MessageStatus.SCHEDULED, Message.scheduled_for <= now,
                                 Message.channel.in_(channels_open), Message.candidate_id.not_in(hidden_candidate_ids()))
        .order_by(Message.scheduled_for, Message.id).limit(limit)))


def claim(session: Session, now: datetime, channels_open: list[str], limit: int, lease: timedelta) -> list[int]:
    """Claim up to ``limit`` due messages for this process; commit before returning.

    PostgreSQL: rows locked with FOR UPDATE SKIP LOCKED, so concurrent dispatchers take
    different rows. SQLite: one conditional UPDATE (``status = 'scheduled'``) over the due
    rows inside an IMMEDIATE transaction; those it returns are claimed.
    """
    if not channels_open:
        return []
    values = {"status": MessageStatus.SENDING, "lease_until": now + lease, "attempts": Message.attempts + 1}
    if session.get_bind().dialect.name == "postgresql":
        ids = list(session.scalars(
            select(Message.id).where(Message.status == MessageStatus.SCHEDULED, Message.scheduled_for <= now,
                                     Message.channel.in_(channels_open),
                                     Message.candidate_id.not_in(hidden_candidate_ids()))
            .order_by(Message.scheduled_for, Message.id).limit(limit).with_for_update(skip_locked=True)))
        if ids:
            session.execute(update(Message).where(Message.id.in_(ids)).values(**values)
                            .execution_options(synchronize_session=False))
        session.commit()
        return ids
    due = _due_ids(session, now, channels_open, limit)
    taken: set[int] = set()
    if due:
        # One conditional UPDATE for the batch (it was one per row): RETURNING names exactly
        # the rows it changed, so a row another process claimed in between is not ours.
        taken = set(session.scalars(update(Message).where(Message.id.in_(due),
                                                          Message.status == MessageStatus.SCHEDULED)
                                    .values(**values).returning(Message.id)
                                    .execution_options(synchronize_session=False)))
    session.commit()
    return [message_id for message_id in due if message_id in taken]


SENT_EVENTS = {"reminder": "reminded", "nudge": "nudged", "final_nudge": "nudged", "manual_nudge": "nudged"}


def record_sent(session: Session, message: Message, candidate: Candidate, provider_id: str | None, now: datetime) -> None:
    """Mark a message sent and write what it means for the candidate."""
    message.status = MessageStatus.SENT
    message.sent_at = now
    message.provider_id = provider_id
    message.last_error = None
    message.lease_until = None
    if message.kind == "invite":
        if stages.move(session, candidate, Stage.INVITED, now, channel=message.channel, message_id=message.id):
            start_deadline_clock(candidate, now)
        else:
            stages.record(session, candidate, "invited", now, channel=message.channel, message_id=message.id,
                          detail="invite sent again")
    elif message.kind in SENT_EVENTS:
        stages.record(session, candidate, SENT_EVENTS[message.kind], now, channel=message.channel,
                      message_id=message.id, detail=f"{message.kind.replace('_', ' ')} {message.step}")


def record_failure(session: Session, message: Message, candidate: Candidate, result: channels.SendResult,
                   now: datetime, max_attempts: int) -> str:
    """Reschedule a temporary failure with backoff, or fail for good; return what happened."""
    message.last_error = (result.error or "")[:1000]
    message.lease_until = None
    if result.status == channels.TEMPORARY and message.attempts < max_attempts:
        message.status = MessageStatus.SCHEDULED
        message.scheduled_for = now + backoff(message.attempts)
        return "retried"
    message.status = MessageStatus.FAILED
    if result.status == channels.TEMPORARY:
        message.last_error = f"Gave up after {message.attempts} attempts: {result.error}"[:1000]
    bounced = message.channel == "email" and "Recipient refused" in (result.error or "")
    stages.record(session, candidate, "bounced" if bounced else "failed", now, channel=message.channel,
                  message_id=message.id, detail=message.last_error[:500])
    return "failed"


def dispatch(session: Session, now: datetime, dry_run: bool = False, batch: int = 50) -> DispatchResult:
    """Send every due message (within each channel's per-minute rate) as of ``now``.

    It commits ``session`` first and works in a session of its own.
    """
    out = DispatchResult()
    if dry_run:
        return _dry_run(session, get_settings(session), now, out)
    # The caller's transaction ends here (on SQLite it would hold the write lock we need);
    # the work happens in a session of its own: many short transactions, and no expiring of
    # everything at each commit (each batch is read fresh right after it is claimed).
    session.commit()
    work = Session(bind=session.get_bind(), expire_on_commit=False)
    try:
        _dispatch(work, now, out, batch)
    finally:
        work.close()
    return out


LANES = ("email", "sms", "whatsapp")
RATE_SETTINGS = {"email": "MILO_RATE_EMAIL", "sms": "MILO_RATE_SMS", "whatsapp": "MILO_RATE_WHATSAPP"}


def _dispatch(work: Session, now: datetime, out: DispatchResult, batch: int) -> None:
    """Mark lapsed claims in doubt, then send through one lane per channel that has something due.

    A lane claims, decides and sends the messages of one channel. When several channels
    have work, each lane runs in a thread of its own with a session of its own, so a mail
    server that holds every send until the send deadline cannot delay the texts queued
    behind it (nor the other way round). Nothing else changes: every claim is committed
    before its send, no transaction is open during one, and two lanes never claim the same
    row (they ask for different channels, and claims are exclusive across processes anyway).
    """
    out.in_doubt = mark_in_doubt(work, now)
    lanes = [channel for channel in LANES if work.scalar(
        select(Message.id).where(Message.status == MessageStatus.SCHEDULED, Message.scheduled_for <= now,
                                 Message.channel == channel).limit(1)) is not None]
    work.commit()
    if len(lanes) <= 1:
        for channel in lanes:
            _run_lane(work, channel, now, out, batch)
        return
    app = current_app._get_current_object()
    results = {channel: DispatchResult() for channel in lanes}
    errors: dict[str, BaseException] = {}
    threads = [threading.Thread(target=_lane_thread, name=f"milo-dispatch-{channel}", daemon=True,
                                args=(app, work.get_bind(), channel, now, results[channel], batch, errors))
               for channel in lanes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for channel in lanes:
        lane = results[channel]
        for name in ("sent", "moved", "cancelled", "retried", "failed", "doubtful"):
            getattr(out, name).extend(getattr(lane, name))
        out.in_doubt += lane.in_doubt
        out.down |= lane.down
    if errors:
        raise next(iter(errors.values()))  # after every lane has finished and its outcomes are saved


def _lane_thread(app, bind, channel: str, now: datetime, out: DispatchResult, batch: int,
                 errors: dict[str, BaseException]) -> None:
    """Run one lane in this thread, with an app context and a session of its own."""
    with app.app_context():
        session = Session(bind=bind, expire_on_commit=False)
        try:
            _run_lane(session, channel, now, out, batch)
        except BaseException as err:  # handed to the dispatching thread, which raises it
            log.exception("Dispatch lane %s failed", channel)
            errors[channel] = err
        finally:
            session.close()


def _run_lane(session: Session, channel: str, now: datetime, out: DispatchResult, batch: int) -> None:
    """Claim and send the due messages of one channel, a batch at a time, within its per-minute rate."""
    cfg = current_app.config
    lease = timedelta(seconds=cfg["MILO_CLAIM_LEASE_SECONDS"])
    budget = {channel: cfg[RATE_SETTINGS[channel]] - _sent_last_minute(session, channel, now)}
    smtp = channels.smtp_connection() if channel == "email" else None
    timed_out: set[int] = set()  # template versions that ran out of time in this pass
    try:
        # A worker shutting down (SIGTERM) claims nothing more.
        while budget[channel] > 0 and channel not in out.down and not stopping():
            ids = claim(session, now, [channel], min(batch, budget[channel]), lease)
            if not ids:
                break
            settings = get_settings(session)
            messages = session.scalars(select(Message).where(Message.id.in_(ids)).options(
                joinedload(Message.candidate).joinedload(Candidate.agent).joinedload(Agent.owner))
                .order_by(Message.scheduled_for, Message.id)).unique().all()
            _handle_batch(session, messages, settings, now, smtp, out, cfg["MILO_MAX_ATTEMPTS"], budget, timed_out)
            session.expunge_all()  # keep the identity map small over a long backlog
        session.commit()
    finally:
        if smtp is not None:
            smtp.close()


def record_in_doubt(message: Message, reason: str) -> None:
    """The send's outcome is unknown: in doubt, shown on the outbox page, never re-sent on its own."""
    message.status = MessageStatus.IN_DOUBT
    message.last_error = reason[:1000]
    message.lease_until = None


def _handle_batch(session: Session, messages: list[Message], settings: Settings, now: datetime, smtp,
                  out: DispatchResult, max_attempts: int, budget: dict, timed_out: set | None = None) -> None:
    """Decide a claimed batch in one transaction, render it with none open, then send each message.

    The outcomes are recorded a few sends at a time, in short units between two sends.
    A message that cannot be rendered or built fails alone (permanently, with the reason);
    one whose send ends in an unknown outcome is in doubt alone; the rest of the batch goes on.
    """
    versions: dict = {}
    rules_cache: dict[int, Rules] = {}
    past = history(session, [m.candidate_id for m in messages])
    drafts = []
    for message in messages:
        candidate = message.candidate
        label = _describe(message, candidate)
        if budget[message.channel] <= 0:
            # The channel is at its rate for this tick: hand the claim back untried.
            message.status, message.lease_until = MessageStatus.SCHEDULED, None
            message.attempts = max(message.attempts - 1, 0)
            continue
        if candidate.agent_id not in rules_cache:
            rules_cache[candidate.agent_id] = rules_for(settings, candidate.agent)
        decision = decide(session, message, candidate, rules_cache[candidate.agent_id], now,
                          past.get(candidate.id, (0, None)))
        if decision.action == "cancel":
            message.status, message.last_error, message.lease_until = MessageStatus.CANCELLED, decision.reason, None
            out.cancelled.append(f"{label}: {decision.reason}")
        elif decision.action == "move":
            message.status, message.scheduled_for, message.lease_until = MessageStatus.SCHEDULED, decision.when, None
            message.attempts = max(message.attempts - 1, 0)  # not an attempt: it never left
            message.rule = f"{(message.rule or '').split(' — ')[0]} — {decision.reason}"[:200]
            out.moved.append(f"{label} → {decision.when.isoformat(timespec='minutes')}")
        else:
            budget[message.channel] -= 1
            done, _last = past.get(candidate.id, (0, None))
            # A second message to the same person in this batch must respect the spacing too.
            past[candidate.id] = (done + (message.kind in FOLLOW_UP_KINDS), now)
            drafts.append((message, label, messaging.draft(session, message, settings, versions)))
    # End the transaction: rendering is bounded but may take up to its time limit, and no
    # lock may be held meanwhile (on SQLite every transaction holds the write lock).
    session.commit()
    ready = [(message, label, messaging.build(d, timed_out)) for message, label, d in drafts]
    for message, _label, delivery in ready:
        if delivery.text is not None:
            message.subject, message.body = delivery.subject, delivery.text
    # What goes out is on record before it goes; then no transaction is open during the sends.
    session.commit()
    sent: list[tuple[Message, str, channels.SendResult, bool]] = []  # outcomes not on record yet
    since = time.monotonic()
    for message, label, delivery in ready:
        if delivery.channel in out.down or stopping():
            # The channel failed a moment ago in this tick, or this worker is shutting down
            # (SIGTERM: the message being sent finished first): hand the claim back untried.
            message.status, message.lease_until = MessageStatus.SCHEDULED, None
            message.attempts = max(message.attempts - 1, 0)
            continue
        # The outcomes of the sends before this one are recorded in units between sends,
        # never while one is under way (on SQLite an open unit holds the write lock).
        assert_no_transaction(session, f"Sending message {message.id}")
        unexpected = False
        try:
            result = messaging.deliver(delivery, smtp=smtp if delivery.channel == "email" else None)
        except Exception as err:  # noqa: BLE001 - not an outcome the channels know: this message alone
            log.exception("Unexpected error while sending message %s", message.id)
            if smtp is not None:
                smtp.abort()
            result = channels.SendResult(channels.UNKNOWN, error=f"Unexpected error while sending: "
                                                                 f"{type(err).__name__}: {err}")
            unexpected = True
        if not result.ok and (result.status == channels.TEMPORARY
                              or (result.status == channels.UNKNOWN and not unexpected)):
            # The channel is slow, hung or in trouble: the rest waits for the next tick.
            budget[delivery.channel] = 0
            out.down.add(delivery.channel)
        sent.append((message, label, result, unexpected))
        # Outcomes are recorded every few sends (or half a second), in one short unit. A
        # crash before it leaves those messages "sending": they become "in doubt" and are
        # never re-sent on their own, so batching the writes can cost a recruiter a look,
        # never a double send.
        if len(sent) >= OUTCOME_COMMIT_EVERY or time.monotonic() - since > 0.5:
            _record_outcomes(session, sent, now, out, max_attempts)
            sent, since = [], time.monotonic()
    _record_outcomes(session, sent, now, out, max_attempts)
    session.commit()  # the claims handed back above


def _record_outcomes(session: Session, sent: list[tuple[Message, str, channels.SendResult, bool]], now: datetime,
                     out: DispatchResult, max_attempts: int) -> None:
    """Record the outcomes of a few sends in one write unit, then log them.

    Autoflush is off inside: each stage move is one UPDATE, and the message rows and events
    of the whole group go in one flush at the commit instead of one flush per message.
    """
    if not sent:
        return
    logged = []
    with write_unit(session) as work, work.no_autoflush:
        for message, label, result, unexpected in sent:
            if unexpected:
                record_in_doubt(message, result.error)
                out.in_doubt += 1
                out.doubtful.append(f"{label}: {result.error}")
            elif result.ok:
                record_sent(work, message, message.candidate, result.provider_id, now)
                out.sent.append(label)
                logged.append(("sent", message, None))
            elif result.status == channels.UNKNOWN:
                # The server (or Twilio) may have taken it: never sent again on its own.
                record_in_doubt(message, result.error or "The outcome of the send is unknown")
                logged.append(("in_doubt", message, result.error))
                out.in_doubt += 1
                out.doubtful.append(f"{label}: {result.error}")
            else:
                outcome = record_failure(work, message, message.candidate, result, now, max_attempts)
                logged.append(("retrying" if outcome == "retried" else "failed", message, result.error))
                (out.retried if outcome == "retried" else out.failed).append(f"{label}: {result.error}")
    for outcome, message, error in logged:
        ops_logs.message_outcome(outcome, message, error)


def _dry_run(session: Session, settings: Settings, now: datetime, out: DispatchResult) -> DispatchResult:
    """What dispatch would do at ``now``, changing nothing."""
    due = session.scalars(select(Message).where(Message.status == MessageStatus.SCHEDULED, Message.scheduled_for <= now,
                                                Message.candidate_id.not_in(hidden_candidate_ids()))
                          .order_by(Message.scheduled_for, Message.id).limit(1000)).all()
    for message in due:
        candidate = message.candidate
        decision = decide(session, message, candidate, rules_for(settings, candidate.agent), now)
        label = _describe(message, candidate)
        if decision.action == "send":
            out.would_send.append(f"{label} — {message.rule or 'queued'}")
        elif decision.action == "move":
            out.moved.append(f"{label} → {decision.when.isoformat(timespec='minutes')} ({decision.reason})")
        else:
            out.cancelled.append(f"{label}: {decision.reason}")
    return out


def tick(session: Session, now: datetime, holder: str | None = None) -> tuple[PlanResult, DispatchResult]:
    """One scheduler tick: plan follow-ups (if this process holds the planner lease), then dispatch.

    Every process dispatches (the claims keep each message to one send); only one plans per
    tick, so a large table is scanned once per tick rather than once per worker.
    """
    from ..ops.jobs import after_tick

    ttl = timedelta(seconds=current_app.config["MILO_TICK_SECONDS"] * 0.9)
    holder = holder or lease_holder()
    if take_lease(session, PLANNER_LEASE, holder, now, ttl):
        planned = plan(session, now)
    else:
        planned = PlanResult(skipped=True)
    dispatched = dispatch(session, now)
    from ..integrations.outbound import tick_step  # outbound candidate events: their own outbox

    tick_step(session, now)
    from ..imports.services import tick_step as imports_step  # large bulk uploads, chunk by chunk

    imports_step(session, now, holder)
    after_tick(session, now, holder)  # heartbeat, daily jobs (retention, audit), nightly backup
    return planned, dispatched


# --- schedule of one candidate ------------------------------------------------------------

@dataclass
class Upcoming:
    """A follow-up that is queued or will be planned if nothing changes."""

    when: datetime
    kind: str
    channel: str
    status: str
    rule: str


@dataclass
class Schedule:
    """What will be sent to one candidate, and why nothing (more) will when that is so."""

    items: list[Upcoming]
    note: str = ""


def upcoming(session: Session, candidate: Candidate, now: datetime) -> Schedule:
    """Queued messages plus what the planner will add if nothing changes.

    It uses the planner's own rules (``reminder_moment``, ``nudge_moment``, the cap, the
    stages each follow-up is for), so the page cannot drift from what is really sent.
    """
    settings = get_settings(session)
    rules = rules_for(settings, candidate.agent)
    messages = session.scalars(select(Message).where(Message.candidate_id == candidate.id)).all()
    items = []
    for m in messages:
        if m.status not in (MessageStatus.SCHEDULED, MessageStatus.SENDING, MessageStatus.IN_DOUBT):
            continue
        rule = m.rule or ""
        if m.status == MessageStatus.SCHEDULED:
            # What the dispatcher will do with it, as it would decide now (a queued invite to
            # someone who already started is cancelled, not sent).
            decision = decide(session, m, candidate, rules, max(now, m.scheduled_for))
            if decision.action == "cancel":
                items.append(Upcoming(m.scheduled_for, m.kind, m.channel, "will_be_cancelled", decision.reason))
                continue
        items.append(Upcoming(m.scheduled_for, m.kind, m.channel, m.status, rule))
    have = {(m.kind, m.step) for m in messages}
    counted = sum(1 for m in messages if m.kind in FOLLOW_UP_KINDS and m.status in (
        MessageStatus.SENT, MessageStatus.SCHEDULED, MessageStatus.SENDING, MessageStatus.IN_DOUBT))
    note = _nothing_more(candidate, rules, now, counted)
    if not note:
        planned: list[Upcoming] = []
        if candidate.stage in REMINDABLE and candidate.invited_at:
            for step, hours in enumerate(rules.reminder_offsets, start=1):
                if ("reminder", step) in have:
                    continue
                moment = reminder_moment(candidate.invited_at, hours, candidate.deadline_at, candidate.timezone,
                                         rules, now)
                if moment.when is not None:
                    planned.append(Upcoming(moment.when, "reminder", candidate.channel, "planned",
                                            f"Reminder {step}: {hours} h after the invite, if not clicked"))
            note = "Nudges follow only if they start the interview and do not finish."
        elif candidate.stage == Stage.STARTED:
            leads = [("nudge", rules.nudge_lead)] + (
                [("final_nudge", rules.final_nudge_lead)] if rules.final_nudge_lead else [])
            for kind, lead in leads:
                if (kind, 1) in have:
                    continue
                moment = nudge_moment(candidate.deadline_at, lead, candidate.timezone, rules, now)
                if moment.when is not None:
                    planned.append(Upcoming(moment.when, kind, candidate.channel, "planned",
                                            f"{lead} h before the deadline, if not finished by then"))
        elif candidate.stage == Stage.CLICKED:
            note = "They opened their link: no reminders. A nudge follows if they start and do not finish."
        elif candidate.stage == Stage.ADDED:
            note = "Not invited yet: reminders are planned from the invite on."
        planned.sort(key=lambda u: u.when)
        items += planned[:max(rules.cap - counted, 0)]
        if len(planned) > max(rules.cap - counted, 0):
            note = f"At most {rules.cap} follow-ups per candidate (the cap in the follow-up rules)."
    items = _spaced(items, history(session, [candidate.id]).get(candidate.id, (0, None))[1], candidate, rules)
    if not items and not note:
        note = "Nothing more is planned: no allowed moment is left before the deadline."
    return Schedule(items, note)


def _spaced(items: list[Upcoming], last: datetime | None, candidate: Candidate, rules: Rules) -> list[Upcoming]:
    """The items in order, each moved as the dispatcher will move it: never closer to the
    message before it than the minimum spacing (two reminders that fall on the same Monday
    09:00 go out a spacing apart), or cancelled when that leaves no moment before the deadline."""
    out = []
    for item in sorted(items, key=lambda u: u.when):
        if item.status in (MessageStatus.SCHEDULED, "planned") and last is not None:
            spacing = rules.spacing_manual if item.kind in ("link_resend", "manual_nudge") else rules.spacing_auto
            if item.when < last + spacing:
                when = next_allowed(last + spacing, candidate.timezone, rules, item.kind == "invite")
                if when is None or (candidate.deadline_at and when >= candidate.deadline_at):
                    out.append(replace(item, status="will_be_cancelled",
                                       rule="No moment in the send window before the deadline (minimum spacing)"))
                    continue
                item = replace(item, when=when, rule=f"{item.rule} — moved by the minimum spacing")
        if item.status != "will_be_cancelled":
            last = item.when
        out.append(item)
    return out


def _nothing_more(candidate: Candidate, rules: Rules, now: datetime, counted: int) -> str:
    """Why no follow-up can be planned for this candidate any more, or "" if some can."""
    if candidate.stage == Stage.COMPLETED:
        return "Completed: nothing more is sent."
    if candidate.stage == Stage.OPTED_OUT:
        return "Opted out: nothing more is sent."
    if candidate.stage == Stage.EXPIRED or (candidate.deadline_at and candidate.deadline_at <= now):
        return "The deadline has passed: nothing more is sent."
    if candidate.agent.archived_at is not None:
        return "The interview is archived: nothing more is sent."
    if candidate.channel == "link":
        return "Their link is sent by hand: no automatic messages."
    if getattr(candidate, f"opted_out_{candidate.channel}", False):
        return f"Opted out of {candidate.channel}: no follow-ups on it."
    if candidate.deadline_at is None:
        return "No deadline: follow-ups are planned against the deadline."
    if counted >= rules.cap:
        return f"The follow-up cap is reached ({rules.cap})."
    return ""
