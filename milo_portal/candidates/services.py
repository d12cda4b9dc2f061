"""Candidate rules: adding (with duplicate detection), contact validation, the list query,
recruiter actions that queue outbox messages, and erasure."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Iterable, Iterator
from zoneinfo import ZoneInfo

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from phonenumbers import timezone as phone_timezone
from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from ..errors import DomainError
from ..followups.rules import next_allowed, rules_for
from ..forms_common import country_zones, timezone_names
from ..headers import one_line
from ..models import (
    CHANNELS, SOURCES, Agent, Candidate, Event, Message, MessageStatus, Stage, new_token,
)
from ..settings.services import get_settings
from ..transactions import read_only
from . import stages

PAGE_SIZE = 50
MESSAGE_CHANNELS = ("email", "sms", "whatsapp")
CHANNEL_LABELS = {"email": "E-mail", "sms": "SMS", "whatsapp": "WhatsApp", "link": "Link sent by hand"}


class ContactErrors(DomainError):
    """Several field errors at once: ``errors`` maps field name to message."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__(next(iter(errors.values())), next(iter(errors)))
        self.errors = errors


@dataclass
class ContactData:
    """What a recruiter (or a candidate on the share page) types about a person."""

    name: str = ""
    email: str = ""
    phone: str = ""
    timezone: str = ""
    channel: str = "email"
    deadline: date | None = None


@dataclass
class CleanContact:
    """Contact data after validation: normalised e-mail, E.164 phone, a known zone."""

    name: str
    email: str | None
    phone: str | None
    timezone: str
    channel: str
    phone_timezone: str | None = None


def normalise_email(raw: str) -> str:
    """Validate an e-mail address's syntax and return it lower-cased; raise DomainError."""
    try:
        return validate_email(raw.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as err:
        raise DomainError(f"This e-mail address is not valid: {err}", "email") from None


def normalise_phone(raw: str, default_country: str) -> tuple[str, str | None]:
    """Parse a phone number against the default country; return (E.164, zone if unambiguous)."""
    try:
        number = phonenumbers.parse(raw.strip(), (default_country or "US").upper())
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        raise DomainError(
            f"This is not a valid phone number. Include the country code (e.g. +44 7911 123456) "
            f"unless it is a {default_country.upper()} number.", "phone")
    # The number's own zones (US area codes are precise); failing that, the zones of the main
    # country of its calling code (+44 mobiles list Jersey and Guernsey too, but mean GB).
    zones = [z for z in phone_timezone.time_zones_for_number(number) if z in timezone_names()]
    if len(zones) != 1:
        zones = list(country_zones().get(phonenumbers.region_code_for_country_code(number.country_code), ()))
    return (phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
            zones[0] if len(zones) == 1 else None)


def clean_contact(data: ContactData, default_country: str, default_timezone: str,
                  require_name: bool = True) -> CleanContact:
    """Validate every field at once; raise ContactErrors naming each bad field."""
    errors: dict[str, str] = {}
    email = phone = phone_zone = None
    # A name goes into e-mail headers and texts: a line break typed or pasted into it (the
    # share page is public) becomes a space instead of breaking the message later.
    name = one_line(data.name)
    if require_name and not name:
        errors["name"] = "Enter the candidate's name."
    elif len(name) > 200:
        errors["name"] = "Keep the name under 200 characters."
    if (data.email or "").strip():
        try:
            email = normalise_email(data.email)
        except DomainError as err:
            errors["email"] = err.message
    if (data.phone or "").strip():
        try:
            phone, phone_zone = normalise_phone(data.phone, default_country)
        except DomainError as err:
            errors["phone"] = err.message
    if not (data.email or "").strip() and not (data.phone or "").strip():
        errors["email"] = "Give an e-mail address or a phone number (or both)."
    channel = data.channel or "email"
    if channel not in CHANNELS:
        errors["channel"] = "Choose a channel from the list."
    elif channel == "email" and not (data.email or "").strip() and "email" not in errors:
        errors["email"] = "E-mail is the chosen channel: enter an e-mail address."
    elif channel in ("sms", "whatsapp") and not (data.phone or "").strip() and "phone" not in errors:
        errors["phone"] = f"{CHANNEL_LABELS[channel]} is the chosen channel: enter a phone number."
    zone = data.timezone or phone_zone or default_timezone
    if zone not in timezone_names():
        errors["timezone"] = "Choose a time zone from the list."
    if errors:
        raise ContactErrors(errors)
    return CleanContact(name=name, email=email, phone=phone, timezone=zone, channel=channel,
                        phone_timezone=phone_zone)


def default_deadline_date(agent: Agent, tz_name: str, now: datetime) -> date:
    """The deadline a new candidate gets: the agent's number of days from today, local."""
    return (now.astimezone(ZoneInfo(tz_name)) + timedelta(days=agent.deadline_days)).date()


def deadline_from_date(day: date, tz_name: str, now: datetime) -> datetime:
    """End of ``day`` in the candidate's zone, as UTC; refuse a day already past."""
    zone = ZoneInfo(tz_name)
    if day < now.astimezone(zone).date():
        raise ContactErrors({"deadline": "The deadline cannot be in the past."})
    return datetime.combine(day, time(23, 59, 59), tzinfo=zone).astimezone(ZoneInfo("UTC"))


def start_deadline_clock(candidate: Candidate, now: datetime) -> None:
    """The first invite went at ``now``: a default deadline counts its days from here."""
    if not candidate.deadline_follows_invite:
        return
    day = default_deadline_date(candidate.agent, candidate.timezone, now)
    candidate.deadline_at = datetime.combine(day, time(23, 59, 59), tzinfo=ZoneInfo(candidate.timezone)) \
        .astimezone(ZoneInfo("UTC"))
    candidate.deadline_follows_invite = False


def find_existing(session: Session, agent_id: int, email: str | None, phone: str | None) -> Candidate | None:
    """The candidate already added to this agent with the same e-mail (or, lacking one, phone)."""
    base = select(Candidate).where(Candidate.agent_id == agent_id, Candidate.erased_at.is_(None))
    if email:
        return session.scalar(base.where(Candidate.email == email))
    if phone:
        return session.scalar(base.where(Candidate.phone == phone).order_by(Candidate.id).limit(1))
    return None


def add_candidate(session: Session, agent: Agent, contact: CleanContact, deadline_at: datetime, now: datetime, *,
                  source: str = "manual", source_detail: str | None = None, invite_now: bool = False,
                  actor_id: int | None = None, deadline_follows_invite: bool = False) -> tuple[Candidate, bool]:
    """Add a person to an agent; return (candidate, created).

    Someone already added to this agent (same e-mail) is returned instead of a second
    candidate. With ``invite_now`` the invite is queued in the outbox in the same
    transaction (or, for a link sent by hand, the candidate counts as invited at once).
    ``deadline_follows_invite``: ``deadline_at`` is the interview's default, to be counted
    again from the moment the first invite goes.
    """
    if source not in SOURCES:
        raise DomainError(f"Unknown source {source!r}.")
    existing = find_existing(session, agent.id, contact.email, contact.phone)
    if existing is not None:
        return existing, False
    candidate = Candidate(
        agent_id=agent.id, name=contact.name or None, email=contact.email, phone=contact.phone,
        timezone=contact.timezone, channel=contact.channel, source=source,
        source_detail=source_detail, deadline_at=deadline_at, deadline_follows_invite=deadline_follows_invite,
        stage=Stage.ADDED,
        created_by_id=actor_id, created_at=now, updated_at=now, last_activity_at=None,
    )
    try:
        with session.begin_nested():
            session.add(candidate)
    except IntegrityError:
        # Added by someone else a moment ago (unique agent + e-mail): open theirs.
        existing = find_existing(session, agent.id, contact.email, contact.phone)
        if existing is None:
            raise
        return existing, False
    stages.record(session, candidate, "added", now, detail=source, actor_id=actor_id)
    if invite_now:
        send_invite(session, candidate, now, actor_id=actor_id, rule="Invite now, on add")
    return candidate, True


# --- outbox -------------------------------------------------------------------------------

def _next_step(session: Session, candidate_id: int, kind: str) -> int:
    current = session.scalar(
        select(func.max(Message.step)).where(Message.candidate_id == candidate_id, Message.kind == kind)
    )
    return (current or 0) + 1


def opted_out(candidate: Candidate, channel: str) -> bool:
    """Whether the candidate refused messages on this channel."""
    return bool(getattr(candidate, f"opted_out_{channel}", False))


def first_allowed(session: Session, candidate: Candidate, kind: str, step: int, now: datetime) -> datetime:
    """When a new message may go: the next moment in the candidate's send window.

    The first invite also keeps to the days allowed for initial sends ("avoid Fridays").
    """
    rules = rules_for(get_settings(session), candidate.agent)
    when = next_allowed(now, candidate.timezone, rules, initial=(kind == "invite" and step == 1))
    return when or now


def queue_message(session: Session, candidate: Candidate, kind: str, now: datetime, *,
                  channel: str | None = None, manual: bool = True, actor_id: int | None = None,
                  rule: str = "", immediate: bool = False) -> Message:
    """Insert one outbox message (the dispatcher sends it). Opt-outs are never overridden.

    It is due at the next allowed moment, or at once when ``immediate`` (a recruiter's
    "Send now", or a link the candidate is waiting for).
    """
    channel = channel or candidate.channel
    if channel not in MESSAGE_CHANNELS:
        raise DomainError("This candidate gets their link by hand: copy it from this page.")
    if opted_out(candidate, channel):
        raise DomainError(f"{candidate.name or 'This candidate'} opted out of {CHANNEL_LABELS[channel]} messages.")
    if channel == "email" and not candidate.email:
        raise DomainError("There is no e-mail address for this candidate.")
    if channel in ("sms", "whatsapp") and not candidate.phone:
        raise DomainError("There is no phone number for this candidate.")
    step = _next_step(session, candidate.id, kind)
    message = Message(
        candidate_id=candidate.id, kind=kind, step=step, channel=channel, manual=manual, immediate=immediate,
        status=MessageStatus.SCHEDULED, rule=rule, created_by_id=actor_id, created_at=now,
        scheduled_for=now if immediate else first_allowed(session, candidate, kind, step, now),
    )
    session.add(message)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise DomainError("A message for this candidate was queued at the same moment; reload and check the outbox.") from None
    return message


def send_invite(session: Session, candidate: Candidate, now: datetime, *, actor_id: int | None = None,
                rule: str = "Invite sent by a recruiter", immediate: bool = False) -> Message | None:
    """Queue the invite (or, for a link sent by hand, mark the candidate invited).

    ``immediate`` is the recruiter's "Send now": it skips the window and the days allowed
    for first invites, never an opt-out.
    """
    if candidate.stage in Stage.TERMINAL:
        raise DomainError(f"This candidate is {candidate.stage.replace('_', ' ')}: no invite is sent.")
    if candidate.channel == "link":
        if stages.move(session, candidate, Stage.INVITED, now, channel="link", actor_id=actor_id,
                       detail="link sent by hand"):
            start_deadline_clock(candidate, now)
        return None
    queued = session.scalar(select(Message).where(
        Message.candidate_id == candidate.id, Message.kind == "invite",
        Message.status.in_((MessageStatus.SCHEDULED, MessageStatus.SENDING))).limit(1))
    if queued is not None:
        # One invite in the outbox at a time: a second would reach the person twice.
        if immediate and queued.status == MessageStatus.SCHEDULED:
            queued.immediate, queued.scheduled_for, queued.rule = True, now, rule
            return queued
        raise DomainError("An invite is already queued for this candidate: use Send now to send it at once.")
    return queue_message(session, candidate, "invite", now, manual=actor_id is not None,
                         actor_id=actor_id, rule=rule, immediate=immediate)


def nudge_now(session: Session, candidate: Candidate, now: datetime, actor_id: int | None) -> Message:
    """Queue a manual nudge for a candidate who started and has not finished."""
    if candidate.stage != Stage.STARTED:
        raise DomainError("Only candidates who started and have not finished can be nudged.")
    if candidate.deadline_at and candidate.deadline_at <= now:
        raise DomainError("The deadline has passed: extend it first.")
    return queue_message(session, candidate, "manual_nudge", now, manual=True, actor_id=actor_id,
                         rule="Nudge now, by a recruiter")


def nudgeable(session: Session, agent_id: int, now: datetime) -> list[Candidate]:
    """Candidates of an agent who started, have not finished, and are still before the deadline."""
    return list(session.scalars(select(Candidate).where(
        Candidate.agent_id == agent_id, Candidate.stage == Stage.STARTED, Candidate.erased_at.is_(None),
        or_(Candidate.deadline_at.is_(None), Candidate.deadline_at > now))))


def nudge_all(session: Session, agent_id: int, now: datetime, actor_id: int | None) -> tuple[int, list[str]]:
    """Nudge every candidate of an agent who started and has not finished; return (nudged, skipped)."""
    return bulk_apply(session, "nudge", nudgeable(session, agent_id, now), now, actor_id)


def extend_deadline(session: Session, candidate: Candidate, new_deadline: datetime, now: datetime,
                    actor_id: int | None) -> None:
    """Move the deadline later. An expired candidate gets their interview back.

    This is the one way back from ``expired``: a recruiter's explicit decision, recorded as
    its own event, returning the candidate to the furthest stage they had reached.
    """
    if candidate.stage in (Stage.COMPLETED, Stage.OPTED_OUT):
        raise DomainError(f"This candidate is {candidate.stage.replace('_', ' ')}; the deadline no longer matters.")
    if new_deadline <= now:
        raise DomainError("The new deadline must be in the future.", "deadline")
    candidate.deadline_at = new_deadline
    if candidate.stage == Stage.EXPIRED:
        candidate.stage = (Stage.STARTED if candidate.started_at else Stage.CLICKED if candidate.clicked_at
                           else Stage.INVITED if candidate.invited_at else Stage.ADDED)
    candidate.updated_at = now
    stages.record(session, candidate, "deadline_extended", now, actor_id=actor_id,
                  detail=new_deadline.isoformat(timespec="minutes"))


def set_opt_out(session: Session, candidate: Candidate, channel: str, out: bool, now: datetime,
                actor_id: int | None, via: str = "recruiter") -> int:
    """Opt the candidate out of (or back into) a channel; cancel what is queued on it.

    Returns the number of queued messages cancelled.
    """
    if channel not in MESSAGE_CHANNELS:
        raise DomainError("Choose e-mail, SMS or WhatsApp.")
    if opted_out(candidate, channel) == out:
        return 0
    setattr(candidate, f"opted_out_{channel}", out)
    candidate.updated_at = now
    stages.record(session, candidate, "opted_out" if out else "opted_in", now, channel=channel,
                  actor_id=actor_id, detail=via)
    if not out:
        return 0
    result = session.execute(
        update(Message)
        .where(Message.candidate_id == candidate.id, Message.channel == channel,
               Message.status == MessageStatus.SCHEDULED)
        .values(status=MessageStatus.CANCELLED, last_error=f"Opted out of {CHANNEL_LABELS[channel]} ({via})")
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


def update_contact(session: Session, candidate: Candidate, contact: CleanContact, now: datetime) -> None:
    """Save edited contact details; the e-mail must stay unique within the agent."""
    if contact.email and contact.email != candidate.email:
        other = find_existing(session, candidate.agent_id, contact.email, None)
        if other is not None and other.id != candidate.id:
            raise ContactErrors({"email": "Another candidate of this interview already has this e-mail."})
    candidate.name = contact.name or None
    candidate.email = contact.email
    candidate.phone = contact.phone
    candidate.timezone = contact.timezone
    candidate.channel = contact.channel
    candidate.updated_at = now


def mark_completed(session: Session, candidate: Candidate, now: datetime, actor_id: int | None) -> None:
    """Record completion of an external interview on the recruiter's word."""
    if not stages.move(session, candidate, Stage.COMPLETED, now, actor_id=actor_id, detail="marked by a recruiter"):
        raise DomainError(f"A candidate who is {candidate.stage.replace('_', ' ')} cannot be marked completed.")


def erase_candidate(session: Session, candidate: Candidate, now: datetime, actor_id: int | None) -> None:
    """Erase personal data and answers; keep the anonymous events so metrics stay right.

    The token changes too, so the old link stops working.
    """
    session.execute(
        update(Message)
        .where(Message.candidate_id == candidate.id)
        .values(subject=None, body=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Message)
        .where(Message.candidate_id == candidate.id, Message.status == MessageStatus.SCHEDULED)
        .values(status=MessageStatus.CANCELLED, last_error="Candidate erased")
        .execution_options(synchronize_session=False)
    )
    for answer in list(candidate.answers):
        session.delete(answer)
    candidate.name = candidate.email = candidate.phone = candidate.source_detail = None
    candidate.token = new_token()
    candidate.erased_at = now
    candidate.updated_at = now
    stages.record(session, candidate, "erased", now, actor_id=actor_id)


# --- listing ------------------------------------------------------------------------------

SORTS = {
    "added": Candidate.created_at,
    "activity": Candidate.last_activity_at,
    "deadline": Candidate.deadline_at,
    "invited": Candidate.invited_at,
    "name": Candidate.name,
    "stage": Candidate.stage,
}


@dataclass
class ListFilters:
    """What the candidates list is filtered, searched and sorted by."""

    agent_id: int | None = None
    stage: str | None = None
    source: str | None = None
    channel: str | None = None
    q: str = ""
    sort: str = "added"
    desc: bool = True
    page: int = 1
    ids: list[int] = field(default_factory=list)


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def filtered(filters: ListFilters) -> Select:
    """The SELECT of candidates matching the filters (not erased), without order or paging."""
    query = select(Candidate).where(Candidate.erased_at.is_(None))
    if filters.agent_id:
        query = query.where(Candidate.agent_id == filters.agent_id)
    if filters.stage in Stage.ALL:
        query = query.where(Candidate.stage == filters.stage)
    if filters.source in SOURCES:
        query = query.where(Candidate.source == filters.source)
    if filters.channel in CHANNELS:
        query = query.where(Candidate.channel == filters.channel)
    if filters.ids:
        query = query.where(Candidate.id.in_(filters.ids))
    q = filters.q.strip().lower()
    if q:
        conds = [func.lower(Candidate.name).like(_like(q), escape="\\"),
                 Candidate.email.like(_like(q), escape="\\")]
        digits = "".join(ch for ch in q if ch.isdigit())
        if len(digits) >= 3:
            conds.append(Candidate.phone.like(_like(digits), escape="\\"))
        query = query.where(or_(*conds))
    return query


def list_candidates(session: Session, filters: ListFilters) -> tuple[list[Candidate], int]:
    """One page of candidates with their agents (one query for rows, one for the count)."""
    base = filtered(filters)
    total = session.scalar(select(func.count()).select_from(base.subquery()))
    column = SORTS.get(filters.sort, Candidate.created_at)
    order = column.desc() if filters.desc else column.asc()
    if filters.desc:
        order = order.nulls_last()
    else:
        order = order.nulls_last()
    rows = session.scalars(
        base.options(joinedload(Candidate.agent))
        .order_by(order, Candidate.id.desc() if filters.desc else Candidate.id.asc())
        .limit(PAGE_SIZE).offset((max(filters.page, 1) - 1) * PAGE_SIZE)
    ).all()
    return list(rows), total or 0


CSV_HEADER = ["id", "name", "email", "phone", "interview", "stage", "source", "source detail", "channel",
              "time zone", "added (UTC)", "invited (UTC)", "clicked (UTC)", "started (UTC)",
              "completed (UTC)", "deadline (UTC)", "device"]


def csv_safe(value) -> str:
    """A cell that a spreadsheet will not run as a formula."""
    text = "" if value is None else str(value)
    if text and text[0] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def _iso(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""


def export_csv(session: Session, filters: ListFilters) -> Iterator[str]:
    """Stream the matching candidates as CSV, in chunks, formula cells neutralised."""
    read_only(session)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_HEADER)
    query = filtered(filters).options(joinedload(Candidate.agent)).order_by(Candidate.id)
    for c in session.scalars(query.execution_options(yield_per=1000)):
        writer.writerow([csv_safe(v) for v in (
            c.id, c.name, c.email, c.phone, c.agent.title, c.stage, c.source, c.source_detail, c.channel,
            c.timezone, _iso(c.created_at), _iso(c.invited_at), _iso(c.clicked_at), _iso(c.started_at),
            _iso(c.completed_at), _iso(c.deadline_at), c.device_class)])
        if buf.tell() > 64 * 1024:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


# --- the candidate page -------------------------------------------------------------------

@dataclass
class TimelineItem:
    """One line of a candidate's timeline: an event or an outbox message."""

    at: datetime
    kind: str
    title: str
    channel: str | None = None
    device_class: str | None = None
    detail: str | None = None
    status: str | None = None


def timeline(session: Session, candidate: Candidate) -> list[TimelineItem]:
    """Every event and message of the candidate, newest first."""
    items = [
        TimelineItem(at=e.at, kind="event", title=e.type.replace("_", " "), channel=e.channel,
                     device_class=e.device_class, detail=e.detail)
        for e in session.scalars(select(Event).where(Event.candidate_id == candidate.id))
    ]
    for m in session.scalars(select(Message).where(Message.candidate_id == candidate.id)):
        label = m.kind.replace("_", " ")
        items.append(TimelineItem(
            at=m.sent_at or m.scheduled_for, kind="message",
            title=f"{label} #{m.step}" if m.step > 1 else label, channel=m.channel,
            detail=m.last_error or m.rule, status=m.status))
    items.sort(key=lambda i: i.at, reverse=True)
    return items


def bulk_apply(session: Session, action: str, candidates: Iterable[Candidate], now: datetime,
               actor_id: int | None, extend_days: int = 0) -> tuple[int, list[str]]:
    """Apply a list action to each selected candidate; return (done, reasons for skips)."""
    done, skipped = 0, []
    for c in candidates:
        try:
            if action == "invite":
                if c.stage != Stage.ADDED:
                    raise DomainError("already invited")
                send_invite(session, c, now, actor_id=actor_id, rule="Invite, bulk action")
            elif action == "nudge":
                nudge_now(session, c, now, actor_id)
            elif action == "extend":
                base = max(c.deadline_at or now, now)
                extend_deadline(session, c, base + timedelta(days=extend_days), now, actor_id)
            else:
                raise DomainError(f"Unknown action {action!r}.")
        except DomainError as err:
            skipped.append(f"{c.name or c.email or c.phone}: {err.message}")
        else:
            done += 1
    return done, skipped
