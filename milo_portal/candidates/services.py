"""Candidate rules: adding (with duplicate detection), contact validation, the list query,
recruiter actions that queue outbox messages, and erasure."""
from __future__ import annotations

import base64
import binascii
import csv
import io
import json
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Iterable, Iterator
from zoneinfo import ZoneInfo

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from phonenumbers import timezone as phone_timezone
from sqlalchemy import (Integer, Select, and_, any_, bindparam, column, delete, false, func, or_, select, table, tuple_,
                        update)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from ..errors import DomainError
from ..followups.rules import next_allowed, rules_for
from ..forms_common import country_zones, timezone_names
from ..headers import one_line
from ..models import (
    CHANNELS, SOURCES, Agent, Candidate, CandidateFile, Event, ExternalRef, ImportRow, IntegrationDelivery, Message,
    MessageStatus, Stage, UTCDateTime, candidate_visible, creating_batch_ids, new_token,
)
from ..settings.services import get_settings
from ..transactions import read_only
from . import stages, tally

PAGE_SIZE = 50
MESSAGE_CHANNELS = ("email", "sms", "whatsapp")
CHANNEL_LABELS = {"email": "E-mail", "sms": "SMS", "whatsapp": "WhatsApp", "link": "Link sent by hand"}
SOURCE_LABELS = {"manual": "Added manually", "bulk": "Bulk upload", "share_link": "Share link", "api": "API",
                 "ats": "ATS", "indeed": "Indeed"}


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


def valid_email(raw: str) -> str:
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
            email = valid_email(data.email)
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
        send_invite(session, candidate, now, actor_id=actor_id, rule="Invite on add, at the next allowed time")
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
    # What other ways in kept of the person: a resume, another system's id for them, the
    # upload row they came from, the webhook body that brought them.
    session.execute(delete(CandidateFile).where(CandidateFile.candidate_id == candidate.id))
    session.execute(delete(ExternalRef).where(ExternalRef.candidate_id == candidate.id))
    session.execute(update(ImportRow).where(ImportRow.candidate_id == candidate.id)
                    .values(name=None, email=None, phone=None, external_id=None)
                    .execution_options(synchronize_session=False))
    # The log line's words named them ("added: Ada Lovelace …; resume ada.pdf kept").
    session.execute(update(IntegrationDelivery).where(IntegrationDelivery.candidate_id == candidate.id)
                    .values(body=None, detail="(erased with the candidate)").execution_options(synchronize_session=False))
    candidate.name = candidate.email = candidate.phone = candidate.source_detail = None
    candidate.token = new_token()
    candidate.erased_at = now
    candidate.updated_at = now
    stages.record(session, candidate, "erased", now, actor_id=actor_id)


# --- listing ------------------------------------------------------------------------------
#
# The list stays fast at a million candidates because nothing in it grows with the table:
# - totals come from maintained counts (``tally``), or from counting a search's matches
#   through its index up to a cap;
# - pages are keyset pages: the rows after (or before) a cursor holding the last row's sort
#   value and id, read in the order of an index, so a deep page costs what the first does;
# - the search goes through a trigram index (SQLite: FTS5 table ``candidate_search``;
#   PostgreSQL: pg_trgm GIN indexes), both made by migration 0006_fast_candidate_lists.
# Each page is read one of three ways, chosen from those counts (see ``_plan``).

SORTS = {
    "added": Candidate.created_at,
    "activity": Candidate.last_activity_at,
    "deadline": Candidate.deadline_at,
    "invited": Candidate.invited_at,
    "name": Candidate.name,
    "stage": Candidate.stage,
}
# A filter on agent or stage is read through ix_candidate_agent_stage / ix_candidate_stage_deadline
# and sorted when that reads fewer rows than walking the sort's index would (see
# ``_read_through_filter``), and never more than this many.
SORT_AFTER_FILTER = 10_000
# A search with at most this many matches is read through the search index, counted and
# sorted; one with more walks the sort's index (its matches are dense there) uncounted.
SEARCH_COUNT_CAP = 5_000

WALK, FILTER, SEARCH = "walk", "filter", "search"
# Sorts with an index for one agent's candidates (ix_candidate_agent_sort_*, and
# ix_candidate_agent_stage for stage: on SQLite every index ends in the row id).
AGENT_SORTS = ("added", "activity", "stage")


@dataclass
class ListFilters:
    """What the candidates list is filtered, searched and sorted by, and which page it shows.

    ``after`` / ``before`` are cursors (see ``encode_cursor``): the page after or before
    that row. ``last`` asks for the last page. None of them: the first page. ``page`` is
    only the number shown (carried along in the links, never used to find rows).
    """

    agent_id: int | None = None
    stage: str | None = None
    source: str | None = None
    channel: str | None = None
    q: str = ""
    sort: str = "added"
    desc: bool = True
    after: str | None = None
    before: str | None = None
    last: bool = False
    page: int | None = None
    ids: list[int] = field(default_factory=list)
    # A drill-down from the Metrics page: who ("clicked_not_started"...), an optional
    # dimension and value, and the page's filters (``metrics.definitions.Filters.drill``).
    metric: str | None = None
    metric_dim: str | None = None
    metric_value: str | None = None
    metric_args: dict = field(default_factory=dict)
    # The drill-down's SQL condition, made by ``with_metric`` (not from the URL).
    metric_condition: object = None

    def valid(self) -> tuple[int | None, str | None, str | None, str | None]:
        """(agent, stage, source, channel), each None when absent or not a known value."""
        return (self.agent_id or None, self.stage if self.stage in Stage.ALL else None,
                self.source if self.source in SOURCES else None,
                self.channel if self.channel in CHANNELS else None)


@dataclass
class CandidatePage:
    """One page of the list: its rows, the total (None: too many search matches to count),
    and cursors for the pages before and after it (None at either end)."""

    rows: list[Candidate]
    total: int | None
    before: str | None = None
    after: str | None = None


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class unindexed(ColumnElement):
    """A column that SQLite's planner may not use an index for: ``+column`` (a no-op).

    The list tells SQLite which index each plan reads by leaving only that index usable;
    SQLite has no statistics unless someone runs ANALYZE and would otherwise often read a
    filter's index and sort 300,000 rows for a page of 50. PostgreSQL plans from its own
    statistics: there it is the plain column.
    """

    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]

    def __init__(self, column) -> None:
        self.column = column
        self.type = column.type


@compiles(unindexed)
def _compile_unindexed(element, compiler, **kw):
    return compiler.process(element.column, **kw)


@compiles(unindexed, "sqlite")
def _compile_unindexed_sqlite(element, compiler, **kw):
    return "+" + compiler.process(element.column, **kw)


_FTS = table("candidate_search", column("rowid", Integer), column("candidate_search"))


@dataclass(frozen=True)
class Search:
    """The search box: a substring of the name or e-mail (any case), or of the phone's
    digits when the text has three digits or more ("555 0100" finds +14155550100)."""

    text: str
    digits: str

    @classmethod
    def parse(cls, q: str) -> "Search | None":
        """The search for the box's text, or None when it is blank."""
        text = (q or "").strip().lower()
        if not text:
            return None
        digits = "".join(ch for ch in text if ch in "0123456789")
        return cls(text, digits if len(digits) >= 3 else "")

    def _parts(self, lower) -> list:
        parts = [lower(Candidate.name).like(_like(self.text), escape="\\"),
                 Candidate.email.like(_like(self.text), escape="\\")]
        if self.digits:
            parts.append(Candidate.phone.like(_like(self.digits), escape="\\"))
        return parts

    def like(self, dialect: str):
        """The condition on a row's own columns: what a walk checks row by row, and what
        PostgreSQL's trigram GIN indexes serve. (SQLite's lower() folds only ASCII; the
        app's milo_lower() folds like the trigram index does, so both plans agree.)"""
        return or_(*self._parts(func.milo_lower if dialect == "sqlite" else func.lower))

    def fts(self) -> str | None:
        """The query for SQLite's trigram table, or None for text under three characters
        (a trigram index cannot find those; they match so many rows that walking is fast)."""
        if len(self.text) < 3:
            return None
        query = '{name email} : "' + self.text.replace('"', '""') + '"'
        if self.digits:
            query += f' OR phone : "{self.digits}"'
        return query

    def fts_ids(self) -> Select:
        """SQLite: the ids of the candidates its trigram table finds (text of 3 or more)."""
        return select(_FTS.c.rowid).where(_FTS.c.candidate_search.op("MATCH")(self.fts()))

    def pg_lookup(self):
        """PostgreSQL: the condition the trigram GIN indexes look up, exact like ``like``.

        For an e-mail address only its part up to the "@" is looked up in the e-mail index
        (the whole address is checked on the rows found): a domain's trigrams are shared by
        a large part of the table, and GIN would read every one of their entries.
        """
        parts = self._parts(func.lower)
        local, at, _domain = self.text.partition("@")
        if at and len(local) >= 2:
            parts[1] = and_(Candidate.email.like(_like(local + "@"), escape="\\"),
                            func.concat(Candidate.email, "").like(_like(self.text), escape="\\"))
        return or_(*parts)

    def condition(self, dialect: str):
        """The search as one condition on candidate, through the index where there is one."""
        if dialect == "sqlite" and self.fts() is not None:
            return Candidate.id.in_(self.fts_ids())
        return self.like(dialect)


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _conditions(filters: ListFilters, indexed: tuple[str, ...] = ("agent_id", "stage", "source", "channel")) -> list:
    """Erased rows out, and the filters; those not in ``indexed`` hidden from SQLite's planner."""
    conds = [Candidate.erased_at.is_(None), candidate_visible()]
    for name, value in zip(("agent_id", "stage", "source", "channel"), filters.valid()):
        if value is not None:
            column = getattr(Candidate, name)
            conds.append((column if name in indexed else unindexed(column)) == value)
    if filters.ids:
        conds.append(Candidate.id.in_(filters.ids))
    if filters.metric_condition is not None:
        conds.append(filters.metric_condition)
    return conds


def with_metric(session: Session, filters: ListFilters) -> ListFilters:
    """The filters with a Metrics drill-down's condition: exactly the people the figure counted.

    The condition is the very expression the Metrics page counted with, so the list and
    the figure cannot disagree. A malformed drill-down matches nobody.
    """
    if not filters.metric:
        return filters
    from ..metrics import definitions, services as metrics  # (metrics reads candidates, not the reverse)

    drill = definitions.parse_drill(filters.metric_args)
    condition = None
    if drill is not None:
        condition = metrics.people_condition(session, drill, filters.metric, filters.metric_dim, filters.metric_value)
    return replace(filters, metric_condition=condition if condition is not None else false())


def filtered(filters: ListFilters, dialect: str = "") -> Select:
    """The SELECT of candidates matching the filters (not erased), without order or paging."""
    query = select(Candidate).where(*_conditions(filters))
    search = Search.parse(filters.q)
    if search is not None:
        query = query.where(search.condition(dialect))
    return query


def _plan(session: Session, filters: ListFilters) -> tuple[str, list, int | None]:
    """How to read the pages: (plan, conditions, total or None when not counted).

    WALK reads the sort's index in order and skips rows that do not match: fast when
    matches are common. FILTER reads a few matches through the filter's index and sorts
    them. SEARCH reads a few matches through the search index and sorts them.
    """
    dialect = _dialect(session)
    agent_id, stage, source, channel = filters.valid()
    # One agent's list walks an index that starts with the agent where there is one.
    walk = _conditions(filters, indexed=("agent_id",) if filters.sort in AGENT_SORTS else ())
    search = Search.parse(filters.q)
    if filters.metric_condition is not None:
        # A drill-down: its people are counted once and read through the condition.
        conds = _conditions(filters, indexed=()) + ([search.like(dialect)] if search is not None else [])
        return FILTER, conds, session.scalar(select(func.count()).where(*conds))
    if search is None:
        if filters.ids:
            return FILTER, _conditions(filters, indexed=()), session.scalar(
                select(func.count()).where(*_conditions(filters)))
        total = tally.count(session, agent_id, stage, source, channel)
        if agent_id or stage:
            # Rows the filter's index reads, and rows the walk reads on average to fill a
            # page (the index it walks holds everyone, or this agent's candidates).
            through_index = tally.count(session, agent_id, stage)
            walked = tally.count(session, agent_id if filters.sort in AGENT_SORTS else None)
            if _read_through_filter(through_index, (PAGE_SIZE + 1) * walked / max(total, 1)):
                return FILTER, _conditions(filters, indexed=("agent_id", "stage")), total
        return WALK, walk, total
    many = WALK, walk + [search.like(dialect)], None
    if len(search.text) < 3:
        return many  # no trigram to look up: and text this short matches many rows anyway
    if dialect == "sqlite":
        lookup = search.fts_ids()
    elif _estimated_rows(session, select(Candidate.id).where(search.like(dialect))) > SEARCH_COUNT_CAP:
        # PostgreSQL's statistics say the text is common. A GIN index scan cannot stop
        # early, and one over trigrams that every row has reads millions of entries.
        return many
    else:
        lookup = select(Candidate.id).where(search.pg_lookup())
    # The index's matches, once: counted here, then read by id.
    ids = session.scalars(lookup.limit(SEARCH_COUNT_CAP + 1)).all()
    if len(ids) > SEARCH_COUNT_CAP:
        # Common text: one row in a few hundred or more matches, so walking the sort's
        # index and checking each row finds a page soon.
        return many
    conds = _conditions(filters, indexed=()) + [_id_in(ids, dialect)]
    if not any(filters.valid()) and not filters.ids and not session.scalar(creating_batch_ids().limit(1)):
        return SEARCH, conds, len(ids)  # (erased candidates have no name, e-mail or phone left)
    return SEARCH, conds, session.scalar(select(func.count()).where(*conds))


def _id_in(ids: list[int], dialect: str):
    if dialect == "postgresql":
        return Candidate.id == any_(bindparam(None, ids, type_=postgresql.ARRAY(Integer)))
    return Candidate.id.in_(ids)


def _estimated_rows(session: Session, query: Select) -> float:
    """PostgreSQL's estimate of how many rows a query returns (EXPLAIN: plans, runs nothing)."""
    compiled = query.compile(session.get_bind())
    plan = session.connection().exec_driver_sql("EXPLAIN (FORMAT JSON) " + str(compiled), compiled.params).scalar()
    return float(plan[0]["Plan"]["Plan Rows"])


def _read_through_filter(through_index: int, walked: float) -> bool:
    """Whether reading the filter's matches and sorting them beats walking the sort's index."""
    return through_index <= SORT_AFTER_FILTER and through_index < walked


def _sort_value(candidate: Candidate, sort: str):
    return getattr(candidate, SORTS[sort].key)


def encode_cursor(candidate: Candidate, sort: str) -> str:
    """An opaque URL-safe cursor for this row's place in a list sorted by ``sort``."""
    value = _sort_value(candidate, sort)
    if isinstance(value, datetime):
        value = value.isoformat()
    raw = json.dumps([value, candidate.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str | None, sort: str) -> tuple[object, int] | None:
    """(sort value, id) from a cursor; None for a missing or malformed one (the first page)."""
    if not token:
        return None
    try:
        value, row_id = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(row_id, int) or not (value is None or isinstance(value, str)):
            return None
        if value is not None and isinstance(SORTS[sort].type, UTCDateTime):
            value = datetime.fromisoformat(value)
            if value.tzinfo is None:
                return None
    except (ValueError, TypeError, binascii.Error):
        return None
    return value, row_id


def _read(session: Session, plan: str, conds: list, sort: str, desc: bool, cursor, forward: bool,
          limit: int) -> list[Candidate]:
    """Up to ``limit`` rows from the cursor on, in list order (``forward``) or backwards.

    The list's order is: rows with a sort value by (value, id), then, for a column that may
    be empty, rows without one by id, both in the chosen direction ("nulls last" either
    way, alike on SQLite and PostgreSQL). Each part is read on its own with a plain
    row-value comparison, so either part's index serves it.
    """
    attribute = SORTS[sort]
    nullable = Candidate.__table__.c[attribute.key].nullable
    wrap = (lambda c: c) if plan == WALK else unindexed
    value_col, id_col = wrap(attribute), wrap(Candidate.id)
    parts = [False, True] if nullable else [False]  # True: the part without a value
    if not forward:
        parts.reverse()
    going_down = desc if forward else not desc
    if cursor is not None:
        parts = parts[parts.index(cursor[0] is None):]
    rows: list[Candidate] = []
    for empty in parts:
        where = list(conds)
        if empty:
            where.append(value_col.is_(None))
            if cursor is not None:
                where.append(id_col < cursor[1] if going_down else id_col > cursor[1])
            order = [id_col.desc() if going_down else id_col.asc()]
        else:
            if nullable:
                where.append(value_col.is_not(None))
            if cursor is not None:
                key = tuple_(value_col, id_col)
                at = tuple_(bindparam(None, cursor[0], type_=attribute.type), bindparam(None, cursor[1], type_=Integer))
                where.append(key < at if going_down else key > at)
            order = [value_col.desc(), id_col.desc()] if going_down else [value_col.asc(), id_col.asc()]
        rows += session.scalars(select(Candidate).where(*where).order_by(*order)
                                .options(joinedload(Candidate.agent)).limit(limit - len(rows))).all()
        if len(rows) >= limit:
            break
        cursor = None  # the next part is read whole
    return rows


DATE_SORTS = ("added", "activity", "deadline", "invited")


def date_cursor(day: date, tz_name: str, sort: str, desc: bool) -> str | None:
    """A cursor that starts a date-sorted list at ``day`` (in the recruiter's zone).

    Newest first: the rows before the next midnight; oldest first: the rows from that
    midnight on. Ids are positive, so id 0 sits before every row of the same instant.
    """
    if sort not in DATE_SORTS:
        return None
    midnight = datetime.combine(day + timedelta(days=1) if desc else day, time(0), tzinfo=ZoneInfo(tz_name))
    raw = json.dumps([midnight.astimezone(ZoneInfo("UTC")).isoformat(), 0], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def list_candidates(session: Session, filters: ListFilters) -> CandidatePage:
    """One page of candidates with their agents, the total, and cursors to move on.

    With a known total the last page holds the remainder (61 rows: 50, then 11), so paging
    back from it lands on the same pages as paging forward from the first.
    """
    sort = filters.sort if filters.sort in SORTS else "added"
    filters = replace(with_metric(session, filters), sort=sort)
    plan, conds, total = _plan(session, filters)

    def read(cursor, forward: bool, size: int = PAGE_SIZE) -> tuple[list[Candidate], bool]:
        rows = _read(session, plan, conds, sort, filters.desc, cursor, forward, size + 1)
        more = len(rows) > size
        rows = rows[:size]
        return (rows if forward else rows[::-1]), more

    before = decode_cursor(filters.before, sort)
    after = decode_cursor(filters.after, sort)
    if before is not None:
        rows, has_before = read(before, forward=False)
        has_after = True
        if not has_before:
            # Back at the start: show a full first page rather than a short one.
            rows, has_after = read(None, forward=True)
    elif filters.last:
        rows, has_before = read(None, forward=False, size=(total % PAGE_SIZE or PAGE_SIZE) if total else PAGE_SIZE)
        has_after = False
    else:
        rows, has_after = read(after, forward=True)
        has_before = after is not None
        if not rows and after is not None:
            # Past the end (the rows after the cursor went away): show the last page.
            rows, has_before = read(None, forward=False)
    if total is None and not has_before and not has_after:
        total = len(rows)  # everything that matches is on this one page
    return CandidatePage(
        rows=rows, total=total,
        before=encode_cursor(rows[0], sort) if has_before and rows else None,
        after=encode_cursor(rows[-1], sort) if has_after and rows else None,
    )


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
    filters = with_metric(session, filters)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_HEADER)
    query = filtered(filters, _dialect(session)).options(joinedload(Candidate.agent)).order_by(Candidate.id)
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
    # An "added" event's detail is the stored source (share_link, bulk…): shown as its label.
    items = [
        TimelineItem(at=e.at, kind="event", title=e.type.replace("_", " "), channel=e.channel,
                     device_class=e.device_class,
                     detail=SOURCE_LABELS.get(e.detail, e.detail) if e.type == "added" and e.detail else e.detail)
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
