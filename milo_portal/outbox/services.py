"""Recruiter actions on outbox messages, each allowed only from the right status."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload

from ..errors import DomainError
from ..models import Candidate, Message, MessageStatus
from ..pagination import numbered_page

PAGE_SIZE = 50

# Which action is allowed from which status, and where it leads.
ACTIONS = {
    "retry": ({MessageStatus.FAILED}, MessageStatus.SCHEDULED),
    "send_again": ({MessageStatus.IN_DOUBT}, MessageStatus.SCHEDULED),
    "mark_sent": ({MessageStatus.IN_DOUBT}, MessageStatus.SENT),
    "cancel": ({MessageStatus.SCHEDULED}, MessageStatus.CANCELLED),
}


def counts(session: Session) -> dict[str, int]:
    """Messages per status."""
    found = dict(session.execute(select(Message.status, func.count()).group_by(Message.status)).all())
    return {status: found.get(status, 0) for status in MessageStatus.ALL}


def page(session: Session, status: str, number: int) -> tuple[list[Message], int]:
    """One page of messages in a status, with their candidates (no query per row)."""
    total = session.scalar(select(func.count()).select_from(Message).where(Message.status == status)) or 0
    order = Message.scheduled_for.asc() if status == MessageStatus.SCHEDULED else Message.id.desc()
    rows = numbered_page(session, select(Message).where(Message.status == status)
                         .options(joinedload(Message.candidate).joinedload(Candidate.agent)).order_by(order),
                         number, PAGE_SIZE)
    return rows, total


def act(session: Session, message: Message, action: str, now: datetime, actor_name: str) -> str:
    """Apply a recruiter's action; raise DomainError when the status does not allow it."""
    if action not in ACTIONS:
        raise DomainError("Unknown action.")
    allowed, target = ACTIONS[action]
    if message.status not in allowed:
        raise DomainError(f"This message is {message.status.replace('_', ' ')}: it cannot be "
                          f"{action.replace('_', ' ')}.")
    if action in ("retry", "send_again"):
        if message.candidate.erased_at is not None:
            raise DomainError("The candidate was erased.")
        message.status, message.scheduled_for, message.attempts = target, now, 0
        message.lease_until = None
        message.rule = f"{'Retry' if action == 'retry' else 'Send again'} by {actor_name}"
        return "Queued again: it goes out on the next tick (inside the send window)."
    if action == "mark_sent":
        message.status, message.sent_at, message.lease_until = target, message.sent_at or now, None
        message.last_error = f"Marked as sent by {actor_name}"
        return "Marked as sent."
    message.status, message.last_error = target, f"Cancelled by {actor_name}"
    return "Cancelled."
