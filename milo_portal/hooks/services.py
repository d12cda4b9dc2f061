"""What inbound SMS/WhatsApp replies and delivery reports do."""
from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..candidates import services as candidates
from ..candidates import stages
from ..models import Candidate, Event, Message, MessageStatus, WebhookReceipt

STOP_WORDS = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"}
START_WORDS = {"START", "UNSTOP", "YES"}
HELP_WORDS = {"HELP", "INFO"}


def command_of(body: str | None) -> str | None:
    """"stop", "start", "help" or None for a reply (case and spacing do not matter)."""
    word = re.sub(r"\s+", "", (body or "")).upper().strip(".!")
    if word in STOP_WORDS:
        return "stop"
    if word in START_WORDS:
        return "start"
    if word in HELP_WORDS:
        return "help"
    return None


def first_time(session: Session, source: str, event_id: str, now: datetime) -> bool:
    """Record a webhook event id; False if it was processed before (a replay)."""
    try:
        with session.begin_nested():
            session.add(WebhookReceipt(source=source, event_id=event_id[:200], received_at=now))
    except IntegrityError:
        return False
    return True


def parse_sender(raw: str) -> tuple[str, str]:
    """("sms" or "whatsapp", E.164 number) from Twilio's From field."""
    raw = (raw or "").strip()
    if raw.startswith("whatsapp:"):
        return "whatsapp", raw[len("whatsapp:"):]
    return "sms", raw


def apply_command(session: Session, command: str, channel: str, phone: str, now: datetime) -> int:
    """Opt every candidate with this number out of (or back into) the channel; return how many."""
    people = session.scalars(select(Candidate).where(Candidate.phone == phone, Candidate.erased_at.is_(None))).all()
    for person in people:
        candidates.set_opt_out(session, person, channel, command == "stop", now, actor_id=None,
                               via=f"replied {command.upper()}")
    return len(people)


# Twilio reports each step of an outbound message: queued, sending, sent, then one final
# report, delivered, undelivered or failed ("read" may follow "delivered" on WhatsApp).
# Each report is its own HTTP request, so they can arrive in any order: only the first
# final report counts, and a late "failed" cannot undo a "delivered" (nor the reverse).
DELIVERY_EVENTS = {"delivered": "delivered", "failed": "failed", "undelivered": "failed"}
FINAL_EVENTS = ("delivered", "failed", "bounced")


def delivery_report(session: Session, sid: str, status: str, error_code: str | None, now: datetime) -> bool:
    """Record a delivery report for one of our messages (first final report only); return whether it was ours."""
    # The row lock (PostgreSQL; SQLite's write lock does the same) makes two reports for one
    # message, arriving at once in two workers, take turns: the second sees the first.
    message = session.scalar(select(Message).where(Message.provider_id == sid).with_for_update())
    event_type = DELIVERY_EVENTS.get(status)
    if message is None or event_type is None:
        return message is not None
    already = session.scalar(select(Event.id).where(  # by candidate first: that is indexed
        Event.candidate_id == message.candidate_id, Event.message_id == message.id,
        Event.type.in_(FINAL_EVENTS)).limit(1))
    if already is not None:
        return True
    detail = f"Twilio {status}" + (f" (error {error_code})" if error_code else "")
    if event_type == "failed" and message.status == MessageStatus.SENT:
        message.status = MessageStatus.FAILED
        message.last_error = detail
    stages.record(session, message.candidate, event_type, now, channel=message.channel, message_id=message.id,
                  detail=detail)
    return True
