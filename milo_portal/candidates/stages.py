"""The candidate stage machine: stages only move forward, and each move writes one event.

A move is one conditional UPDATE (``... WHERE stage IN (stages it may come from)``): when
two requests race (a double click, two tabs), exactly one changes the row and only that one
writes the event, so a second visit is never a second "clicked".
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from ..models import Candidate, Event, Message, MessageStatus, Stage

_ORDER = {stage: i for i, stage in enumerate(Stage.FUNNEL)}

# Timestamp column set when a stage is reached, and the event type written.
_STAMP = {
    Stage.INVITED: "invited_at",
    Stage.CLICKED: "clicked_at",
    Stage.STARTED: "started_at",
    Stage.COMPLETED: "completed_at",
}


def allowed_from(target: str) -> tuple[str, ...]:
    """The stages a candidate may be in to move to ``target``."""
    if target in _ORDER:
        return tuple(s for s in Stage.FUNNEL if _ORDER[s] < _ORDER[target])
    if target in (Stage.EXPIRED, Stage.OPTED_OUT):
        # Any stage short of the end; a completed interview is never undone.
        return tuple(s for s in Stage.FUNNEL if s != Stage.COMPLETED)
    raise ValueError(f"unknown stage {target!r}")


def can_move(current: str, target: str) -> bool:
    """Whether the stage machine allows ``current`` → ``target``."""
    return current in allowed_from(target)


def move(session: Session, candidate: Candidate, target: str, now: datetime, *,
         channel: str | None = None, device_class: str | None = None, detail: str | None = None,
         message_id: int | None = None, actor_id: int | None = None) -> bool:
    """Move the candidate to ``target`` if allowed; write its event. Return whether it moved.

    The caller commits. Skipping stages is allowed (a copied link goes straight from added to
    clicked); going back is not.
    """
    if candidate.stage not in allowed_from(target):
        # Decided in Python first: a repeat visit sends no UPDATE at all (a GET stays a read).
        # Stages only move forward, so a stage read earlier can only be behind the row's.
        return False
    values: dict = {"stage": target, "updated_at": now, "last_activity_at": now}
    stamp = _STAMP.get(target)
    if stamp:
        values[stamp] = now
    if target == Stage.CLICKED and device_class:
        values["device_class"] = device_class
    result = session.execute(
        update(Candidate)
        .where(Candidate.id == candidate.id, Candidate.stage.in_(allowed_from(target)))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    session.add(Event(
        candidate_id=candidate.id, agent_id=candidate.agent_id, type=target, at=now,
        channel=channel, device_class=device_class, detail=detail, message_id=message_id,
        actor_id=actor_id,
    ))
    # The row now holds these values: mirror them on the object without another query.
    for key, value in values.items():
        set_committed_value(candidate, key, value)
    if target == Stage.COMPLETED:
        # Nothing queued may go to someone who finished. The dispatcher would cancel it when
        # due; cancelling it now keeps the outbox and the candidate page truthful meanwhile.
        session.execute(
            update(Message).where(Message.candidate_id == candidate.id, Message.status == MessageStatus.SCHEDULED)
            .values(status=MessageStatus.CANCELLED, last_error="Candidate completed the interview", lease_until=None)
            .execution_options(synchronize_session=False))
    _announce(session, candidate, target, now, channel)
    return True


def record(session: Session, candidate: Candidate, event_type: str, now: datetime, **fields) -> Event:
    """Append an event that is not a stage move (answered, nudged, opted_in...)."""
    event = Event(candidate_id=candidate.id, agent_id=candidate.agent_id, type=event_type, at=now, **fields)
    session.add(event)
    _announce(session, candidate, event_type, now, fields.get("channel"))
    return event


def _announce(session: Session, candidate: Candidate, event_type: str, now: datetime, channel: str | None) -> None:
    """Queue the outbound event (candidate.created, .started, ...) for the team's webhook URLs."""
    from ..integrations.outbound import EVENT_TYPES, emit

    if event_type in EVENT_TYPES:
        emit(session, candidate, event_type, now, channel)
