"""The follow-up engine: the planner inserts due follow-ups, the dispatcher claims and sends.

Correctness never depends on there being one scheduler: several processes may plan and
dispatch at once. The planner's inserts are ``ON CONFLICT DO NOTHING`` on the unique
(candidate, kind, step), and the dispatcher claims each message with one conditional
UPDATE (PostgreSQL: ``FOR UPDATE SKIP LOCKED``) committed before any network call.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import and_, case, exists, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, joinedload

from ..candidates import stages
from ..messaging import channels
from ..messaging import services as messaging
from ..models import Agent, Candidate, Message, MessageStatus, Settings, Stage
from ..settings.services import get_settings
from .rules import AUTOMATIC_KINDS, FOLLOW_UP_KINDS, Rules, backoff, in_window, next_allowed, rules_for

log = logging.getLogger(__name__)

OUTCOME_COMMIT_EVERY = 10
REMINDABLE = (Stage.INVITED, Stage.OPENED)  # invited, link not clicked yet
LIVE = (Stage.ADDED, Stage.INVITED, Stage.OPENED, Stage.CLICKED, Stage.STARTED)


# --- planning -----------------------------------------------------------------------------

@dataclass
class PlanResult:
    """What one planning pass did."""

    expired: int = 0
    planned: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        parts = [f"{n} {kind}" for kind, n in sorted(self.planned.items()) if n]
        return f"planned: {', '.join(parts) or 'nothing'}; expired: {self.expired}"


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


def _followups_sent(candidate_id_col):
    """SQL: how many follow-ups a candidate has had or has queued (for the cap)."""
    return (select(func.count()).select_from(Message)
            .where(Message.candidate_id == candidate_id_col, Message.kind.in_(FOLLOW_UP_KINDS),
                   Message.status.in_((MessageStatus.SENT, MessageStatus.SCHEDULED, MessageStatus.SENDING,
                                       MessageStatus.IN_DOUBT)))
            .scalar_subquery())


def _has_message(kind: str, step: int):
    return exists().where(Message.candidate_id == Candidate.id, Message.kind == kind, Message.step == step)


def _opted_out_of_channel():
    return or_(and_(Candidate.channel == "email", Candidate.opted_out_email.is_(True)),
               and_(Candidate.channel == "sms", Candidate.opted_out_sms.is_(True)),
               and_(Candidate.channel == "whatsapp", Candidate.opted_out_whatsapp.is_(True)))


def expire_due(session: Session, now: datetime) -> int:
    """Candidates whose deadline passed become expired (one event each); their queue is cancelled."""
    ids = session.scalars(select(Candidate.id).where(
        Candidate.stage.in_(LIVE), Candidate.deadline_at.is_not(None), Candidate.deadline_at <= now,
        Candidate.erased_at.is_(None)).limit(5000)).all()
    moved = 0
    for candidate in session.scalars(select(Candidate).where(Candidate.id.in_(ids))):
        if stages.move(session, candidate, Stage.EXPIRED, now, detail="deadline passed"):
            moved += 1
    if ids:
        session.execute(update(Message).where(Message.candidate_id.in_(ids), Message.status == MessageStatus.SCHEDULED)
                        .values(status=MessageStatus.CANCELLED, last_error="Deadline passed")
                        .execution_options(synchronize_session=False))
    return moved


def plan(session: Session, now: datetime, commit: bool = True) -> PlanResult:
    """Insert every follow-up that is due at ``now`` (found in SQL, not by loading everyone).

    With ``commit=False`` the caller decides (a dry run rolls it all back).
    """
    settings = get_settings(session)
    result = PlanResult(expired=expire_due(session, now))
    # An archived interview shows "closed" on its links: nothing more is planned for it.
    agents = session.scalars(select(Agent).where(Agent.archived_at.is_(None))).all()
    for agent in agents:
        rules = rules_for(settings, agent)
        _plan_reminders(session, agent, rules, now, result)
        _plan_nudges(session, agent, rules, now, result)
    if commit:
        session.commit()
    else:
        session.flush()
    return result


def _base_query(agent: Agent, rules: Rules, now: datetime):
    return (select(Candidate.id, Candidate.timezone, Candidate.channel, Candidate.invited_at, Candidate.deadline_at)
            .where(Candidate.agent_id == agent.id, Candidate.erased_at.is_(None), Candidate.channel != "link",
                   Candidate.deadline_at > now, ~_opted_out_of_channel(),
                   _followups_sent(Candidate.id) < rules.cap))


def _row(candidate_id: int, kind: str, step: int, channel: str, when: datetime, rule: str, now: datetime) -> dict:
    return {"candidate_id": candidate_id, "kind": kind, "step": step, "channel": channel, "manual": False,
            "immediate": False, "status": MessageStatus.SCHEDULED, "scheduled_for": when, "rule": rule,
            "attempts": 0, "last_error": None, "created_at": now}


def _plan_reminders(session: Session, agent: Agent, rules: Rules, now: datetime, result: PlanResult) -> None:
    for step, hours in enumerate(rules.reminder_offsets, start=1):
        query = _base_query(agent, rules, now).where(
            Candidate.stage.in_(REMINDABLE), Candidate.invited_at <= now - timedelta(hours=hours),
            ~_has_message("reminder", step))
        if step > 1:  # in order: reminder 2 only after reminder 1 exists
            query = query.where(_has_message("reminder", step - 1))
        rows = []
        for cid, tz, channel, invited_at, deadline in session.execute(query.limit(5000)):
            when = next_allowed(max(invited_at + timedelta(hours=hours), now), tz, rules)
            if when is None or when >= deadline:
                continue
            rows.append(_row(cid, "reminder", step, channel, when,
                             f"Reminder {step}: {hours} h after the invite, not clicked yet", now))
        result.planned["reminder"] += _insert_ignore(session, rows)


def _plan_nudges(session: Session, agent: Agent, rules: Rules, now: datetime, result: PlanResult) -> None:
    plans = [("nudge", rules.nudge_lead)]
    if rules.final_nudge_lead:
        plans.append(("final_nudge", rules.final_nudge_lead))
    for kind, lead in plans:
        query = _base_query(agent, rules, now).where(
            Candidate.stage == Stage.STARTED, Candidate.deadline_at <= now + timedelta(hours=lead),
            ~_has_message(kind, 1))
        rows = []
        for cid, tz, channel, _invited, deadline in session.execute(query.limit(5000)):
            when = next_allowed(max(deadline - timedelta(hours=lead), now), tz, rules)
            if when is None or when >= deadline:
                # No allowed moment before the deadline: recorded, so the outbox says why.
                row = _row(cid, kind, 1, channel, now, f"{lead} h before the deadline", now)
                row.update(status=MessageStatus.CANCELLED, last_error="No moment in the send window before the deadline")
                rows.append(row)
                continue
            label = "Final nudge" if kind == "final_nudge" else "Nudge"
            rows.append(_row(cid, kind, 1, channel, when, f"{label}: {lead} h before the deadline, started not finished", now))
        result.planned[kind] += _insert_ignore(session, rows)


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
                                 Message.channel.in_(channels_open))
        .order_by(Message.scheduled_for, Message.id).limit(limit)))


def claim(session: Session, now: datetime, channels_open: list[str], limit: int, lease: timedelta) -> list[int]:
    """Claim up to ``limit`` due messages for this process; commit before returning.

    PostgreSQL: rows locked with FOR UPDATE SKIP LOCKED, so concurrent dispatchers take
    different rows. SQLite: one conditional UPDATE per row inside an IMMEDIATE transaction,
    kept only when it changed exactly one row.
    """
    if not channels_open:
        return []
    values = {"status": MessageStatus.SENDING, "lease_until": now + lease, "attempts": Message.attempts + 1}
    if session.get_bind().dialect.name == "postgresql":
        ids = list(session.scalars(
            select(Message.id).where(Message.status == MessageStatus.SCHEDULED, Message.scheduled_for <= now,
                                     Message.channel.in_(channels_open))
            .order_by(Message.scheduled_for, Message.id).limit(limit).with_for_update(skip_locked=True)))
        if ids:
            session.execute(update(Message).where(Message.id.in_(ids)).values(**values)
                            .execution_options(synchronize_session=False))
        session.commit()
        return ids
    claimed = []
    for message_id in _due_ids(session, now, channels_open, limit):
        result = session.execute(update(Message).where(Message.id == message_id,
                                                       Message.status == MessageStatus.SCHEDULED)
                                 .values(**values).execution_options(synchronize_session=False))
        if result.rowcount == 1:
            claimed.append(message_id)
    session.commit()
    return claimed


SENT_EVENTS = {"reminder": "reminded", "nudge": "nudged", "final_nudge": "nudged", "manual_nudge": "nudged"}


def record_sent(session: Session, message: Message, candidate: Candidate, provider_id: str | None, now: datetime) -> None:
    """Mark a message sent and write what it means for the candidate."""
    message.status = MessageStatus.SENT
    message.sent_at = now
    message.provider_id = provider_id
    message.last_error = None
    message.lease_until = None
    if message.kind == "invite":
        if not stages.move(session, candidate, Stage.INVITED, now, channel=message.channel, message_id=message.id):
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
        while budget[channel] > 0 and channel not in out.down:
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
    unsaved, since = 0, time.monotonic()
    for message, label, delivery in ready:
        if delivery.channel in out.down:
            # The channel failed a moment ago in this tick: hand the claim back untried.
            message.status, message.lease_until = MessageStatus.SCHEDULED, None
            message.attempts = max(message.attempts - 1, 0)
            continue
        try:
            result = messaging.deliver(delivery, smtp=smtp if delivery.channel == "email" else None)
        except Exception as err:  # noqa: BLE001 - not an outcome the channels know: this message alone
            log.exception("Unexpected error while sending message %s", message.id)
            if smtp is not None:
                smtp.abort()
            result = channels.SendResult(channels.UNKNOWN, error=f"Unexpected error while sending: "
                                                                 f"{type(err).__name__}: {err}")
            record_in_doubt(message, result.error)
            out.in_doubt += 1
            out.doubtful.append(f"{label}: {result.error}")
        else:
            if result.ok:
                record_sent(session, message, message.candidate, result.provider_id, now)
                out.sent.append(label)
            elif result.status == channels.UNKNOWN:
                # The server (or Twilio) may have taken it: never sent again on its own.
                record_in_doubt(message, result.error or "The outcome of the send is unknown")
                out.in_doubt += 1
                out.doubtful.append(f"{label}: {result.error}")
                budget[delivery.channel] = 0  # the channel is slow or hung: the rest waits for the next tick
                out.down.add(delivery.channel)
            else:
                outcome = record_failure(session, message, message.candidate, result, now, max_attempts)
                (out.retried if outcome == "retried" else out.failed).append(f"{label}: {result.error}")
                if result.status == channels.TEMPORARY:
                    budget[delivery.channel] = 0  # the channel is in trouble: try again next tick
                    out.down.add(delivery.channel)
        unsaved += 1
        # Outcomes are committed every few sends (or half a second). A crash before a commit
        # leaves those messages "sending": they become "in doubt" and are never re-sent on
        # their own, so batching the writes can cost a recruiter a look, never a double send.
        if unsaved >= OUTCOME_COMMIT_EVERY or time.monotonic() - since > 0.5:
            session.commit()
            unsaved, since = 0, time.monotonic()
    session.commit()


def _dry_run(session: Session, settings: Settings, now: datetime, out: DispatchResult) -> DispatchResult:
    """What dispatch would do at ``now``, changing nothing."""
    due = session.scalars(select(Message).where(Message.status == MessageStatus.SCHEDULED, Message.scheduled_for <= now)
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


def tick(session: Session, now: datetime) -> tuple[PlanResult, DispatchResult]:
    """One scheduler tick: plan follow-ups, then dispatch what is due."""
    planned = plan(session, now)
    return planned, dispatch(session, now)


# --- schedule of one candidate ------------------------------------------------------------

@dataclass
class Upcoming:
    """A follow-up that is queued or will be planned if nothing changes."""

    when: datetime
    kind: str
    channel: str
    status: str
    rule: str


def upcoming(session: Session, candidate: Candidate, now: datetime) -> list[Upcoming]:
    """Queued messages plus the follow-ups the rules will plan for this candidate."""
    settings = get_settings(session)
    rules = rules_for(settings, candidate.agent)
    items = [Upcoming(m.scheduled_for, m.kind, m.channel, m.status, m.rule or "")
             for m in session.scalars(select(Message).where(
                 Message.candidate_id == candidate.id,
                 Message.status.in_((MessageStatus.SCHEDULED, MessageStatus.SENDING, MessageStatus.IN_DOUBT))))]
    have = {(m.kind, m.step) for m in session.scalars(select(Message).where(Message.candidate_id == candidate.id))}
    if candidate.channel != "link" and not getattr(candidate, f"opted_out_{candidate.channel}", False) \
            and candidate.deadline_at and candidate.deadline_at > now:
        if candidate.stage in REMINDABLE and candidate.invited_at:
            for step, hours in enumerate(rules.reminder_offsets, start=1):
                if ("reminder", step) in have:
                    continue
                when = next_allowed(max(candidate.invited_at + timedelta(hours=hours), now), candidate.timezone, rules)
                if when and when < candidate.deadline_at:
                    items.append(Upcoming(when, "reminder", candidate.channel, "planned",
                                          f"Reminder {step}: {hours} h after the invite, if not clicked"))
        if candidate.stage in (*REMINDABLE, Stage.CLICKED, Stage.STARTED):
            leads = [("nudge", rules.nudge_lead)] + ([("final_nudge", rules.final_nudge_lead)] if rules.final_nudge_lead else [])
            for kind, lead in leads:
                if (kind, 1) in have:
                    continue
                when = next_allowed(max(candidate.deadline_at - timedelta(hours=lead), now), candidate.timezone, rules)
                if when and when < candidate.deadline_at:
                    items.append(Upcoming(when, kind, candidate.channel, "planned",
                                          f"{lead} h before the deadline, if started and not finished"))
    items.sort(key=lambda u: u.when)
    return items

