"""The data model of the whole domain (see DESIGN.md, "Data").

All datetimes are aware UTC in Python and stored as UTC; local-time rules convert with
``zoneinfo`` at the edges.
"""
from __future__ import annotations

import secrets
from datetime import datetime, timezone
from typing import Optional

from flask_login import UserMixin
from sqlalchemy import (
    false,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    or_,
    select,
)
from sqlalchemy.orm import Mapped, column_property, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from .extensions import db


class UTCDateTime(TypeDecorator):
    """Stores aware datetimes as naive UTC and gives them back aware (UTC)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; pass an aware datetime")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc)


def new_token() -> str:
    """Return an unguessable URL-safe token (192 bits from ``secrets``)."""
    return secrets.token_urlsafe(24)


def _utcnow() -> datetime:
    # Column defaults only; rules take ``now`` explicitly.
    from .clock import now

    return now()


# --- vocabularies -------------------------------------------------------------------------

ROLE_LEVELS = ("entry", "professional", "senior")
CHANNELS = ("email", "sms", "whatsapp", "link")
SOURCES = ("manual", "bulk", "share_link", "api", "ats", "indeed")
DEVICE_CLASSES = ("mobile", "tablet", "desktop")


class Stage:
    """Candidate stages; the forward order is the funnel, terminal ones end it."""

    ADDED = "added"
    INVITED = "invited"
    OPENED = "opened"
    CLICKED = "clicked"
    STARTED = "started"
    COMPLETED = "completed"
    EXPIRED = "expired"
    OPTED_OUT = "opted_out"

    FUNNEL = (ADDED, INVITED, OPENED, CLICKED, STARTED, COMPLETED)
    TERMINAL = (COMPLETED, EXPIRED, OPTED_OUT)
    ALL = FUNNEL + (EXPIRED, OPTED_OUT)


class EventType:
    """Types of the append-only ``Event`` log."""

    ALL = (
        "added", "invited", "delivered", "opened", "clicked", "started", "answered",
        "completed", "reminded", "nudged", "bounced", "failed", "opted_out", "opted_in",
        "expired", "deadline_extended", "erased",
        # A link fetched with no human signal yet (mail scanners fetch every link), and an
        # open pixel fetched by a machine (privacy proxies, scanners): kept apart for metrics.
        "visited", "machine_opened",
    )


class MessageStatus:
    """Outbox statuses."""

    SCHEDULED = "scheduled"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SUPPRESSED = "suppressed"
    IN_DOUBT = "in_doubt"
    ALL = (SCHEDULED, SENDING, SENT, FAILED, CANCELLED, SUPPRESSED, IN_DOUBT)


def _in(column: str, values) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


# --- accounts -----------------------------------------------------------------------------

class User(UserMixin, db.Model):
    """A recruiter or admin who logs into the app."""

    __tablename__ = "user"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    # No longer read: logins are rows of ``user_session``. The column stays because dropping a
    # UNIQUE column on SQLite rebuilds the ``user`` table, and with foreign_keys=ON dropping
    # the old table would set every owner/created_by reference to NULL.
    session_token: Mapped[str] = mapped_column(String(64), unique=True, default=new_token)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_utcnow)

    # Not columns: the login in use, set for one request by the user loader (or at login).
    login_token = None
    login_session_id = None

    def set_password(self, password: str) -> None:
        """Hash with Werkzeug's scrypt (ending other sessions is the auth service's job)."""
        self.password_hash = generate_password_hash(password, method="scrypt")

    def check_password(self, password: str) -> bool:
        """Return whether ``password`` matches the stored hash."""
        return check_password_hash(self.password_hash, password)

    @property
    def is_active(self) -> bool:  # Flask-Login reads this
        return bool(self.active)

    def get_id(self) -> str:
        """Flask-Login's id is the raw token of this login's ``user_session`` row.

        Both the session cookie and the remember cookie carry it, so revoking the row ends
        both, wherever a copy of either is.
        """
        if self.login_token is None:
            raise RuntimeError("log in through auth.sessions.start_session, which sets login_token")
        return self.login_token

    def __eq__(self, other):
        """Same account (UserMixin would compare get_id(), now a per-login token)."""
        if isinstance(other, User):
            return self is other or (self.id is not None and self.id == other.id)
        return NotImplemented

    __hash__ = UserMixin.__hash__


class UserSession(db.Model):
    """One login: the cookies carry a random token, the database keeps only its hash.

    A request is logged in only while its row is neither revoked nor expired, so logging
    out, changing a password or revoking on the Team page ends a session everywhere.
    """

    __tablename__ = "user_session"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    remember: Mapped[bool] = mapped_column(Boolean, default=False)
    address: Mapped[str] = mapped_column(String(64))
    device: Mapped[str] = mapped_column(String(80))
    revoked_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    # A secret just made (a webhook secret, an API key) waiting for the one page that shows
    # it after the redirect; that page reads and clears it (``sessions.take_shown_once``).
    shown_once_for: Mapped[Optional[str]] = mapped_column(String(60))
    shown_once: Mapped[Optional[str]] = mapped_column(Text)

    user: Mapped[User] = relationship()


class LoginAttempt(db.Model):
    """One login attempt, kept so every worker process shares the throttling count."""

    __tablename__ = "login_attempt"
    __table_args__ = (
        Index("ix_login_attempt_email_at", "email", "at"),
        Index("ix_login_attempt_address_at", "address", "at"),
        # Throttling counts per (address, account) pair.
        Index("ix_login_attempt_address_email_at", "address", "email", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    email: Mapped[str] = mapped_column(String(254))
    address: Mapped[str] = mapped_column(String(64))
    success: Mapped[bool] = mapped_column(Boolean)


# --- interview agents ---------------------------------------------------------------------

class Agent(db.Model):
    """One interview setup for one role ("interview agent" in the UI)."""

    __tablename__ = "agent"
    __table_args__ = (
        CheckConstraint(_in("role_level", ROLE_LEVELS), name="role_level"),
        CheckConstraint(_in("default_channel", CHANNELS), name="default_channel"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    company: Mapped[str] = mapped_column(String(200))
    role_level: Mapped[str] = mapped_column(String(20), default="professional")
    description: Mapped[str] = mapped_column(Text, default="")
    duration_minutes: Mapped[int] = mapped_column(Integer, default=20)
    deadline_days: Mapped[int] = mapped_column(Integer, default=7)
    default_channel: Mapped[str] = mapped_column(String(20), default="email")
    external_url: Mapped[Optional[str]] = mapped_column(String(2000))
    owner_id: Mapped[Optional[int]] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    share_token: Mapped[str] = mapped_column(String(64), unique=True, default=new_token)
    share_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    archived_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_utcnow, onupdate=_utcnow)
    # Follow-up rules of this agent; None means "the team's setting".
    window_start_minute: Mapped[Optional[int]] = mapped_column(Integer)
    window_end_minute: Mapped[Optional[int]] = mapped_column(Integer)
    send_days: Mapped[Optional[str]] = mapped_column(String(20))
    initial_send_days: Mapped[Optional[str]] = mapped_column(String(20))
    reminder_offsets_hours: Mapped[Optional[str]] = mapped_column(String(50))
    nudge_lead_hours: Mapped[Optional[int]] = mapped_column(Integer)
    final_nudge_lead_hours: Mapped[Optional[int]] = mapped_column(Integer)  # 0: no final nudge
    followup_cap: Mapped[Optional[int]] = mapped_column(Integer)

    owner: Mapped[Optional[User]] = relationship()
    questions: Mapped[list["Question"]] = relationship(
        back_populates="agent", order_by="Question.position", cascade="all, delete-orphan"
    )

    @property
    def share_open(self) -> bool:
        """Whether the share link currently admits new candidates."""
        return self.share_enabled and self.archived_at is None


class Question(db.Model):
    """One question of an agent's interview, in order."""

    __tablename__ = "question"
    __table_args__ = (Index("ix_question_agent_position", "agent_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agent.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)

    agent: Mapped[Agent] = relationship(back_populates="questions")


# How many questions an agent has, without loading them: the candidate pages say "5 questions"
# on every view, and loading the list for that cost a second query per page. Deferred, so only
# the statements that ask for it (``undefer``) pay for the subquery.
Agent.question_count = column_property(
    select(func.count(Question.id)).where(Question.agent_id == Agent.id).correlate_except(Question)
    .scalar_subquery(), deferred=True)


# --- candidates ---------------------------------------------------------------------------

class Candidate(db.Model):
    """One person invited to one agent, reachable through a unique link."""

    __tablename__ = "candidate"
    __table_args__ = (
        UniqueConstraint("agent_id", "email"),
        CheckConstraint(_in("stage", Stage.ALL), name="stage"),
        CheckConstraint(_in("source", SOURCES), name="source"),
        Index("ix_candidate_agent_stage", "agent_id", "stage"),
        Index("ix_candidate_stage_deadline", "stage", "deadline_at"),
        Index("ix_candidate_email", "email"),
        Index("ix_candidate_phone", "phone"),
        # One index per sort of the candidates list, ending in id: a page is read in index
        # order from its keyset cursor (sort value, id), never counted past or sorted whole.
        # One agent's list has its own for the two usual sorts: an agent's candidates arrive
        # in one hiring season, and walking everyone's index to find an old agent's would
        # pass every newer candidate first. (Each index costs every insert a little.)
        Index("ix_candidate_sort_added", "created_at", "id"),
        Index("ix_candidate_sort_activity", "last_activity_at", "id"),
        Index("ix_candidate_sort_deadline", "deadline_at", "id"),
        Index("ix_candidate_sort_invited", "invited_at", "id"),
        Index("ix_candidate_sort_name", "name", "id"),
        Index("ix_candidate_sort_stage", "stage", "id"),
        Index("ix_candidate_agent_sort_added", "agent_id", "created_at", "id"),
        Index("ix_candidate_agent_sort_activity", "agent_id", "last_activity_at", "id"),
        # Every agent's funnel (the agents list) from a narrow index alone, in agent order.
        Index("ix_candidate_funnel", "agent_id", "invited_at", "clicked_at", "started_at", "completed_at", "stage",
              "erased_at"),
        Index("ix_candidate_import_batch_id", "import_batch_id"),
    )
    # Search indexes that the models do not describe (SQLite: an FTS5 trigram table kept by
    # triggers; PostgreSQL: pg_trgm GIN indexes) are made by migration 0006_fast_candidate_lists.

    id: Mapped[int] = mapped_column(primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agent.id", ondelete="CASCADE"))
    name: Mapped[Optional[str]] = mapped_column(String(200))
    email: Mapped[Optional[str]] = mapped_column(String(254))
    phone: Mapped[Optional[str]] = mapped_column(String(20))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    source: Mapped[str] = mapped_column(String(20), default="manual")
    source_detail: Mapped[Optional[str]] = mapped_column(String(100))
    channel: Mapped[str] = mapped_column(String(20), default="email")
    token: Mapped[str] = mapped_column(String(64), unique=True, default=new_token)
    stage: Mapped[str] = mapped_column(String(20), default=Stage.ADDED)
    deadline_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    # The deadline is the interview's "days after the invite", counted again from the moment
    # the first invite really goes (not from when the candidate was added).
    deadline_follows_invite: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    opted_out_email: Mapped[bool] = mapped_column(Boolean, default=False)
    opted_out_sms: Mapped[bool] = mapped_column(Boolean, default=False)
    opted_out_whatsapp: Mapped[bool] = mapped_column(Boolean, default=False)
    device_class: Mapped[Optional[str]] = mapped_column(String(10))
    invited_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    clicked_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    # First fetch of the link, human or not; "clicked" waits for a human signal.
    visited_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    started_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    completed_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    last_activity_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    erased_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    # The first failure or bounce of an invite. Set only by a trigger on ``event`` (migration
    # 0021_agent_failed_invites), for the agents' funnels' "delivered".
    invite_failed_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    created_by_id: Mapped[Optional[int]] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_utcnow, onupdate=_utcnow)
    # The bulk upload that created this candidate. While that batch is "creating" the
    # candidate is hidden (see ``candidate_visible``). No foreign key: adding one to this
    # table on SQLite would rebuild it, and its triggers and search index with it.
    import_batch_id: Mapped[Optional[int]] = mapped_column(Integer)

    agent: Mapped[Agent] = relationship()
    answers: Mapped[list["Answer"]] = relationship(
        back_populates="candidate", order_by="Answer.position", cascade="all, delete-orphan"
    )


class CandidateCount(db.Model):
    """How many candidates (not erased) an agent has per stage, source and channel.

    Written only by database triggers on ``candidate`` (migration 0006_fast_candidate_lists),
    in the same transaction as the change, so no code path can forget it. Each change
    appends a +1/-1 row instead of updating a shared counter: on PostgreSQL two transactions
    moving candidates of the same agent never wait on each other or deadlock. Readers sum the
    rows; ``candidates.tally.fold`` replaces the appended rows by their sums now and then.
    """

    __tablename__ = "candidate_count"
    __table_args__ = (
        Index("ix_candidate_count_agent_stage", "agent_id", "stage"),
        Index("ix_candidate_count_folded", "folded"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # No foreign key: a trigger writes here while an agent's candidates are being deleted.
    agent_id: Mapped[int] = mapped_column(Integer)
    stage: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(20))
    channel: Mapped[str] = mapped_column(String(20))
    n: Mapped[int] = mapped_column(Integer)
    # False for a +1/-1 appended by a trigger, true for a sum written by a fold.
    folded: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class AgentFunnelCount(db.Model):
    """How many candidates (erased ones too) an agent has per funnel position.

    The agents list's and agent page's funnels (the Metrics page's definitions, all-time):
    ``invited`` is whether an invite went out (``invited_at``), ``reached`` the furthest of
    clicked (1), started (2) and completed (3) from their timestamps, 0 for none, ``failed``
    whether an invite failed or bounced (0021_agent_failed_invites). Only
    candidates in the funnel (invited or reached >= 1) are counted. Written only by triggers
    on ``candidate`` (migration 0016_agent_tally) as +1/-1 rows, folded with
    ``candidate_count`` by ``candidates.tally.fold``, exactly like it.
    """

    __tablename__ = "agent_funnel_count"
    __table_args__ = (
        Index("ix_agent_funnel_count_agent", "agent_id"),
        Index("ix_agent_funnel_count_folded", "folded"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # No foreign key: a trigger writes here while an agent's candidates are being deleted.
    agent_id: Mapped[int] = mapped_column(Integer)
    invited: Mapped[bool] = mapped_column(Boolean)
    reached: Mapped[int] = mapped_column(Integer)
    # Whether an invite to the candidate failed or bounced (``Candidate.invite_failed_at``, 0021).
    failed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    n: Mapped[int] = mapped_column(Integer)
    # False for a +1/-1 appended by a trigger, true for a sum written by a fold.
    folded: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


# The triggers on candidate write into candidate_count and agent_funnel_count: they are
# created before and emptied after candidate (tests empty tables in reverse dependency order).
Candidate.__table__.add_is_dependent_on(CandidateCount.__table__)
Candidate.__table__.add_is_dependent_on(AgentFunnelCount.__table__)


# The columns the Metrics page filters its candidates on, and what each by-table groups by
# (``metrics.services.counts_many``); each grouping has its covering index on metrics_fact.
_FACT_FILTERS = ("entered_at", "agent_id", "source", "source_detail", "channel")
_FACT_STEPS = ("invite_click", "click_start", "start_complete", "invite_complete")
# The by-tables' groupings (``metrics.services.counts_many``): source and tag; channel, agent,
# device and follow-ups together (their combinations are few); weekday × hour; time bucket;
# template variant. "agent" alone serves the one-agent filter.
_FACT_GROUPINGS = {"src": ("source", "source_detail"), "mix": ("channel", "agent_id", "device", "followups"),
                   "agent": ("agent_id",), "heat": ("heat",), "bucket": ("bucket",), "variant": ("variant",)}


_FACT_DELIVERY = tuple(f"{channel}_{figure}" for channel in ("email", "sms", "whatsapp")
                       for figure in ("messages", "sent", "failed", "temporary"))


class MetricsStale(db.Model):
    """A candidate whose Metrics facts must be recomputed (see ``MetricsFact``).

    Written by triggers (migration 0017_metrics_facts), in the same transaction as every
    change a fact depends on, and on SQLite for new events and messages by
    ``metrics.facts.absorb`` (``MetricsMark``); ``metrics.facts.refresh`` takes rows out as
    it recomputes. A
    separate, one-column table so that marking costs an insert into a small index (a bulk
    upload of 10,000 people marks 10,000 rows), not a write of the wide fact row and its indexes.
    """

    __tablename__ = "metrics_stale"

    # No foreign key: a trigger writes here while candidates are being deleted (refresh drops
    # the ids of candidates that are gone).
    candidate_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)


class MetricsMark(db.Model):
    """On SQLite, the highest ``event`` and ``message`` id whose candidates the Metrics refresh
    has marked stale (``metrics.facts.absorb``; migration 0018_metrics_marks).

    One writer at a time appends rows with ids one above the highest in use, so the rows
    added since are those above the mark: a bulk upload's events and messages cost no trigger
    each. A delete trigger lowers the mark when the highest ids are deleted (SQLite would hand
    them out again). PostgreSQL marks those rows with triggers and never reads this table.
    """

    __tablename__ = "metrics_mark"

    name: Mapped[str] = mapped_column(String(20), primary_key=True)
    last_id: Mapped[int] = mapped_column(Integer)


class MetricsFact(db.Model):
    """One candidate's facts for the Metrics page, kept so the page reads one narrow row per
    candidate instead of joining every candidate to their events, messages and answers.

    Triggers (migration 0017_metrics_facts) mark the candidate stale (``MetricsStale``) in the
    same transaction as every change a fact depends on: a candidate inserted or changed, an
    event of a type a fact reads, an answer, a message made or its delivery changed.
    ``metrics.facts.refresh`` recomputes the stale candidates' rows in short write units
    before the page reads them (and the scheduler's tick does so in the background), so the
    figures are of the data as it is. The definitions stay those of ``metrics.definitions``:
    ``flags`` holds the raw facts (``definitions.FACT_BITS``) that ``stage_conditions`` combines.
    """

    __tablename__ = "metrics_fact"
    __table_args__ = (
        Index("ix_metrics_fact_entered", "entered_at"),
        # One covering index per by-table: its value and the fact bits first, then every
        # column the page filters on. SQLite reads the index in group order (no sort) and
        # never the table: a by-table is one pass over a narrow index.
        *(Index(f"ix_metrics_fact_by_{name}", *columns, "flags", *(c for c in _FACT_FILTERS if c not in columns))
          for name, columns in _FACT_GROUPINGS.items()),
        # Where the starters stop: per agent and answers given, in that order.
        Index("ix_metrics_fact_answers", "agent_id", "answers", "flags", *_FACT_FILTERS[:1], *_FACT_FILTERS[2:]),
        # One per step duration, in its order: a percentile is the row at its rank.
        *(Index(f"ix_metrics_fact_time_{step}", step, *_FACT_FILTERS) for step in _FACT_STEPS),
        # Deliverability: the message counts by recipient domain, in domain order, with the
        # filter columns, so its read scans this narrow index instead of the wide rows (168 ->
        # 75 ms at 100,000 candidates); with the step durations, the same pass counts how many
        # candidates each step has (the times' medians need that count first).
        Index("ix_metrics_fact_delivery", "email_domain", *_FACT_FILTERS, *_FACT_DELIVERY, *_FACT_STEPS),
    )

    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidate.id", ondelete="CASCADE"), primary_key=True)
    # When the candidate entered the page's date range: invited, or (never invited) first came through a link.
    entered_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    agent_id: Mapped[Optional[int]] = mapped_column(Integer)
    source: Mapped[Optional[str]] = mapped_column(String(20))
    source_detail: Mapped[Optional[str]] = mapped_column(String(100))
    channel: Mapped[Optional[str]] = mapped_column(String(20))
    flags: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Candidate-local weekday (0 = Monday) × 24 + hour of the invite.
    heat: Mapped[Optional[int]] = mapped_column(Integer)
    bucket: Mapped[Optional[int]] = mapped_column(Integer)  # time to complete after the invite (BUCKETS)
    device: Mapped[Optional[str]] = mapped_column(String(10))
    variant: Mapped[Optional[str]] = mapped_column(String(41))  # "<channel>/<variant>" of the first invite
    followups: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # received before completing, 3 = 3+
    answers: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Seconds of each step (TIME_STEPS), NULL where the step did not happen.
    invite_click: Mapped[Optional[float]] = mapped_column(Float)
    click_start: Mapped[Optional[float]] = mapped_column(Float)
    start_complete: Mapped[Optional[float]] = mapped_column(Float)
    invite_complete: Mapped[Optional[float]] = mapped_column(Float)
    email_domain: Mapped[Optional[str]] = mapped_column(String(254))
    # Deliverability: the candidate's messages meant to go (not cancelled or suppressed) per
    # channel, how many were sent, failed for good, and failed for a while (retried).
    email_messages: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    email_sent: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    email_failed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    email_temporary: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    sms_messages: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    sms_sent: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    sms_failed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    sms_temporary: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    whatsapp_messages: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    whatsapp_sent: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    whatsapp_failed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    whatsapp_temporary: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class MetricsAnswer(db.Model):
    """The time a candidate spent on one question (from the previous answer, or the start, to
    this answer), with the candidate's filter columns: the Metrics page's median per question
    reads one index in order instead of ordering every answer. Written by
    ``metrics.facts.refresh`` with the candidate's ``metrics_fact`` row (its triggers mark it stale).
    """

    __tablename__ = "metrics_answer"
    __table_args__ = (
        Index("ix_metrics_answer_candidate", "candidate_id"),
        Index("ix_metrics_answer_spent", "agent_id", "position", "spent", *_FACT_FILTERS[:1],
              *(c for c in _FACT_FILTERS[1:] if c != "agent_id")),
    )

    answer_id: Mapped[int] = mapped_column(ForeignKey("answer.id", ondelete="CASCADE"), primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidate.id", ondelete="CASCADE"))
    agent_id: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer)
    spent: Mapped[float] = mapped_column(Float)
    entered_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    source: Mapped[Optional[str]] = mapped_column(String(20))
    source_detail: Mapped[Optional[str]] = mapped_column(String(100))
    channel: Mapped[Optional[str]] = mapped_column(String(20))


class Answer(db.Model):
    """A candidate's answer to one question; the question text is kept as it was asked."""

    __tablename__ = "answer"
    __table_args__ = (UniqueConstraint("candidate_id", "question_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidate.id", ondelete="CASCADE"))
    question_id: Mapped[Optional[int]] = mapped_column(ForeignKey("question.id", ondelete="SET NULL"))
    position: Mapped[int] = mapped_column(Integer)
    question_text: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    answered_at: Mapped[datetime] = mapped_column(UTCDateTime)

    candidate: Mapped[Candidate] = relationship(back_populates="answers")


class Event(db.Model):
    """Append-only record of what happened to a candidate; the source of truth for metrics."""

    __tablename__ = "event"
    __table_args__ = (
        CheckConstraint(_in("type", EventType.ALL), name="type"),
        Index("ix_event_candidate_at", "candidate_id", "at"),
        Index("ix_event_agent_type_at", "agent_id", "type", "at"),
        Index("ix_event_type_at", "type", "at"),
        # Metrics ask "has this candidate an event of this type": one seek.
        Index("ix_event_candidate_type", "candidate_id", "type"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidate.id", ondelete="CASCADE"))
    # Copied from the candidate so metrics by agent need no join.
    agent_id: Mapped[int] = mapped_column(ForeignKey("agent.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    channel: Mapped[Optional[str]] = mapped_column(String(20))
    message_id: Mapped[Optional[int]] = mapped_column(ForeignKey("message.id", ondelete="SET NULL"))
    device_class: Mapped[Optional[str]] = mapped_column(String(10))
    detail: Mapped[Optional[str]] = mapped_column(String(500))
    actor_id: Mapped[Optional[int]] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))


# --- messaging ----------------------------------------------------------------------------

class Template(db.Model):
    """An editable message template for one kind and channel; one row per A/B variant."""

    __tablename__ = "template"
    __table_args__ = (UniqueConstraint("kind", "channel", "variant"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    channel: Mapped[str] = mapped_column(String(20))
    variant: Mapped[str] = mapped_column(String(20), default="A")
    weight: Mapped[int] = mapped_column(Integer, default=1)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_utcnow)

    versions: Mapped[list["TemplateVersion"]] = relationship(
        back_populates="template", order_by="TemplateVersion.number", cascade="all, delete-orphan"
    )


class TemplateVersion(db.Model):
    """One saved version of a template; versions are kept so any can be restored."""

    __tablename__ = "template_version"
    __table_args__ = (UniqueConstraint("template_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("template.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    subject: Mapped[Optional[str]] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    created_by_id: Mapped[Optional[int]] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_utcnow)

    template: Mapped[Template] = relationship(back_populates="versions")


class Message(db.Model):
    """One outgoing message in the outbox. (candidate, kind, step) is unique by constraint."""

    __tablename__ = "message"
    __table_args__ = (
        UniqueConstraint("candidate_id", "kind", "step"),
        CheckConstraint(_in("status", MessageStatus.ALL), name="status"),
        Index("ix_message_status_scheduled_for", "status", "scheduled_for"),
        Index("ix_message_provider_id", "provider_id"),
        Index("ix_message_created_at", "created_at"),  # deliverability over a date range
        # The Metrics page's opt-outs per template: the messages of a template's versions, by
        # send time, with their candidate (without it SQLite built a transient index of every
        # message on each page view: 185 of the page's milliseconds at 100,000 candidates).
        Index("ix_message_template_version", "template_version_id", "sent_at", "candidate_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidate.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    step: Mapped[int] = mapped_column(Integer, default=1)
    channel: Mapped[str] = mapped_column(String(20))
    manual: Mapped[bool] = mapped_column(Boolean, default=False)
    # "Send now": a recruiter's explicit choice that skips the window and day rules (never opt-outs).
    immediate: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    template_version_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("template_version.id", ondelete="SET NULL")
    )
    variant: Mapped[Optional[str]] = mapped_column(String(20))
    subject: Mapped[Optional[str]] = mapped_column(String(300))
    body: Mapped[Optional[str]] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default=MessageStatus.SCHEDULED)
    rule: Mapped[Optional[str]] = mapped_column(String(200))
    scheduled_for: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[Optional[str]] = mapped_column(String(1000))
    provider_id: Mapped[Optional[str]] = mapped_column(String(200))
    lease_until: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    sent_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    created_by_id: Mapped[Optional[int]] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_utcnow)

    candidate: Mapped[Candidate] = relationship()


# Triggers on these tables write into metrics_stale: it is created before and emptied after them.
for _table in (Candidate.__table__, Event.__table__, Answer.__table__, Message.__table__):
    _table.add_is_dependent_on(MetricsStale.__table__)


# --- team settings ------------------------------------------------------------------------

class Settings(db.Model):
    """Team-wide settings; a single row with id 1."""

    __tablename__ = "settings"

    id: Mapped[int] = mapped_column(primary_key=True)
    company_name: Mapped[str] = mapped_column(String(200), default="")
    sender_name: Mapped[str] = mapped_column(String(200), default="")
    sender_email: Mapped[Optional[str]] = mapped_column(String(254))
    reply_to: Mapped[Optional[str]] = mapped_column(String(254))
    support_email: Mapped[Optional[str]] = mapped_column(String(254))
    support_phone: Mapped[Optional[str]] = mapped_column(String(40))
    default_timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    default_country: Mapped[str] = mapped_column(String(2), default="US")
    # An invisible image in e-mails that records "opened" (approximate: privacy proxies fetch it too).
    open_tracking: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Send window, candidate-local, as minutes after midnight.
    window_start_minute: Mapped[int] = mapped_column(Integer, default=9 * 60)
    window_end_minute: Mapped[int] = mapped_column(Integer, default=18 * 60)
    # ISO weekdays 1=Monday .. 7=Sunday, comma separated.
    send_days: Mapped[str] = mapped_column(String(20), default="1,2,3,4,5")
    initial_send_days: Mapped[str] = mapped_column(String(20), default="1,2,3,4")
    reminder_offsets_hours: Mapped[str] = mapped_column(String(50), default="24,48")
    nudge_lead_hours: Mapped[int] = mapped_column(Integer, default=24)
    final_nudge_lead_hours: Mapped[Optional[int]] = mapped_column(Integer, default=2)
    followup_cap: Mapped[int] = mapped_column(Integer, default=3)
    min_spacing_auto_hours: Mapped[int] = mapped_column(Integer, default=20)
    min_spacing_manual_hours: Mapped[int] = mapped_column(Integer, default=1)


# --- ingestion and API --------------------------------------------------------------------

class ImportBatch(db.Model):
    """One bulk upload of candidate files and its per-row outcome.

    Statuses: ``review`` (files read, nothing created; the files wait in a temporary
    folder), ``creating`` (rows going in by chunks; its candidates are hidden from lists,
    counts and the dispatcher), ``done``, ``undone`` (Undo removed what it could).
    """

    __tablename__ = "import_batch"
    __table_args__ = (Index("ix_import_batch_status", "status"),)

    REVIEW = "review"
    CREATING = "creating"
    DONE = "done"
    UNDONE = "undone"
    # Which status may follow which (one conditional UPDATE makes each move).
    # creating → undone: Undo pressed while the rows were still going in.
    MOVES = {REVIEW: (CREATING,), CREATING: (DONE, REVIEW, UNDONE), DONE: (UNDONE,), UNDONE: ()}

    id: Mapped[int] = mapped_column(primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agent.id", ondelete="CASCADE"))
    created_by_id: Mapped[Optional[int]] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(20), default=REVIEW)
    filenames: Mapped[str] = mapped_column(Text, default="")
    total_rows: Mapped[int] = mapped_column(Integer, default=0)
    created_count: Mapped[int] = mapped_column(Integer, default=0)
    duplicate_count: Mapped[int] = mapped_column(Integer, default=0)
    error_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_utcnow)
    finished_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    # The temporary folder holding the uploaded files until confirm, cancel or a day passes.
    folder: Mapped[Optional[str]] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(20), default="email")
    invite: Mapped[bool] = mapped_column(Boolean, default=True)
    # JSON: the column mapping of each table read from the files.
    mapping: Mapped[str] = mapped_column(Text, default="{}")
    # Written after each chunk while creating: a batch whose heartbeat stopped was abandoned.
    heartbeat_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    undone_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    # Who is creating the rows (the confirm request for a small batch, a scheduler tick for a
    # large one) and until when: one conditional UPDATE takes the batch when ``worker_until``
    # has passed, so one process works a batch at a time and a dead one's batch is resumed.
    worker: Mapped[Optional[str]] = mapped_column(String(64))
    worker_until: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    # Rows of the review handled so far (their ImportRow rows exist): a resumed create starts here.
    rows_done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    removed_count: Mapped[int] = mapped_column(Integer, default=0)
    kept_count: Mapped[int] = mapped_column(Integer, default=0)
    note: Mapped[Optional[str]] = mapped_column(Text)

    agent: Mapped[Agent] = relationship()
    created_by: Mapped[Optional[User]] = relationship()
    rows: Mapped[list["ImportRow"]] = relationship(
        back_populates="batch", order_by="ImportRow.id", cascade="all, delete-orphan", passive_deletes=True
    )


class ImportRow(db.Model):
    """The outcome of one row of an import: created, duplicate or invalid with the reason."""

    __tablename__ = "import_row"
    __table_args__ = (Index("ix_import_row_batch_id", "batch_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("import_batch.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(255))
    row_number: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(20))
    reason: Mapped[Optional[str]] = mapped_column(String(500))
    candidate_id: Mapped[Optional[int]] = mapped_column(ForeignKey("candidate.id", ondelete="SET NULL"))
    # What was read from the row (or the resume), as it was, for the report.
    name: Mapped[Optional[str]] = mapped_column(String(200))
    email: Mapped[Optional[str]] = mapped_column(String(254))
    phone: Mapped[Optional[str]] = mapped_column(String(40))
    external_id: Mapped[Optional[str]] = mapped_column(String(100))

    batch: Mapped[ImportBatch] = relationship(back_populates="rows")


def creating_batch_ids():
    """SELECT of the ids of the import batches still creating (their candidates are hidden)."""
    return select(ImportBatch.id).where(ImportBatch.status == ImportBatch.CREATING)


def candidate_visible():
    """Condition on ``candidate``: not part of a bulk upload that is still being created."""
    return or_(Candidate.import_batch_id.is_(None), Candidate.import_batch_id.not_in(creating_batch_ids()))


def hidden_candidate_ids():
    """SELECT of the ids of candidates hidden because their upload is still being created."""
    return select(Candidate.id).where(Candidate.import_batch_id.in_(creating_batch_ids()))


class ApiKey(db.Model):
    """A named, revocable key for the JSON API; only its hash is stored."""

    __tablename__ = "api_key"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(12), unique=True)
    key_hash: Mapped[str] = mapped_column(String(128))
    created_by_id: Mapped[Optional[int]] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_utcnow)
    last_used_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    revoked_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)


class WebhookReceipt(db.Model):
    """An inbound webhook event id already processed, so a replay is ignored."""

    __tablename__ = "webhook_receipt"
    __table_args__ = (UniqueConstraint("source", "event_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(40))
    event_id: Mapped[str] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)


# --- integrations: the API, inbound webhooks, outbound events -----------------------------

INTEGRATION_KINDS = ("generic", "greenhouse", "indeed", "workable", "lever", "completion")
DELIVERY_OUTCOMES = ("created", "duplicate", "updated", "ignored", "no_agent", "rejected", "error")


class ApiIdempotency(db.Model):
    """The response given to one ``Idempotency-Key`` of one API key, replayed for the same body."""

    __tablename__ = "api_idempotency"
    __table_args__ = (UniqueConstraint("api_key_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_key.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Integration(db.Model):
    """One inbound webhook (an ATS, Indeed, a generic sender or an external interview tool).

    The secret signs what the sender posts, so it is kept as it is (an HMAC needs it); the
    page shows it once. After a rotation the old one is accepted until ``previous_until``.
    """

    __tablename__ = "integration"
    __table_args__ = (CheckConstraint(_in("kind", INTEGRATION_KINDS), name="kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(100))
    token: Mapped[str] = mapped_column(String(64), unique=True, default=new_token)
    secret: Mapped[str] = mapped_column(String(200))
    previous_secret: Mapped[Optional[str]] = mapped_column(String(200))
    previous_until: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    # Lever only: the API key the app reads an event's opportunity with. Kept as it is, like
    # the secret (each request sends it); the page never shows it again once saved.
    api_key: Mapped[Optional[str]] = mapped_column(String(200))
    # Dotted paths into the posted JSON, per field (JSON object); the kind's defaults otherwise.
    field_map: Mapped[str] = mapped_column(Text, default="{}")
    default_agent_id: Mapped[Optional[int]] = mapped_column(ForeignKey("agent.id", ondelete="SET NULL"))
    invite: Mapped[bool] = mapped_column(Boolean, default=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_utcnow)

    jobs: Mapped[list["IntegrationJob"]] = relationship(
        back_populates="integration", order_by="IntegrationJob.external_job", cascade="all, delete-orphan")


class IntegrationJob(db.Model):
    """An external job (ATS job id, Indeed job id) mapped to the agent its applicants join."""

    __tablename__ = "integration_job"
    __table_args__ = (UniqueConstraint("integration_id", "external_job"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    integration_id: Mapped[int] = mapped_column(ForeignKey("integration.id", ondelete="CASCADE"))
    external_job: Mapped[str] = mapped_column(String(200))
    agent_id: Mapped[int] = mapped_column(ForeignKey("agent.id", ondelete="CASCADE"))

    integration: Mapped[Integration] = relationship(back_populates="jobs")
    agent: Mapped[Agent] = relationship()


class IntegrationDelivery(db.Model):
    """One post an integration received: outcome, what it created, the error; the body a short time."""

    __tablename__ = "integration_delivery"
    __table_args__ = (
        CheckConstraint(_in("outcome", DELIVERY_OUTCOMES), name="outcome"),
        Index("ix_integration_delivery_integration_at", "integration_id", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    integration_id: Mapped[int] = mapped_column(ForeignKey("integration.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(20))
    detail: Mapped[str] = mapped_column(String(500), default="")
    event_id: Mapped[Optional[str]] = mapped_column(String(200))
    candidate_id: Mapped[Optional[int]] = mapped_column(ForeignKey("candidate.id", ondelete="SET NULL"))
    body: Mapped[Optional[str]] = mapped_column(Text)


class ExternalRef(db.Model):
    """Another system's id for a candidate (an API caller's, an ATS's, Indeed's): it deduplicates."""

    __tablename__ = "external_ref"
    __table_args__ = (UniqueConstraint("scope", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # "api" or "integration:<id>": ids are unique within the system that gave them.
    scope: Mapped[str] = mapped_column(String(40))
    external_id: Mapped[str] = mapped_column(String(200))
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidate.id", ondelete="CASCADE"), index=True)


class CandidateFile(db.Model):
    """A file that came with a candidate (Indeed's resume): size-limited and type-checked on the way in."""

    __tablename__ = "candidate_file"
    __table_args__ = (Index("ix_candidate_file_candidate_id", "candidate_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidate.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


OUTBOUND_EVENTS = ("candidate.created", "candidate.started", "candidate.completed", "candidate.expired",
                   "candidate.opted_out")


class WebhookDeliveryStatus:
    """Statuses of an outbound event delivery."""

    SCHEDULED = "scheduled"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"
    ALL = (SCHEDULED, SENDING, DELIVERED, FAILED)


class WebhookEndpoint(db.Model):
    """A team's (or one agent's) URL that receives signed candidate events."""

    __tablename__ = "webhook_endpoint"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    agent_id: Mapped[Optional[int]] = mapped_column(ForeignKey("agent.id", ondelete="CASCADE"))
    secret: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Private and loopback targets are refused (SSRF) unless an admin allowed them here.
    allow_private: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_utcnow)

    agent: Mapped[Optional[Agent]] = relationship()


class WebhookDelivery(db.Model):
    """The outbound events outbox: one event for one endpoint, claimed like a message."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id"),
        CheckConstraint(_in("status", WebhookDeliveryStatus.ALL), name="status"),
        Index("ix_webhook_delivery_status_scheduled_for", "status", "scheduled_for"),
        Index("ix_webhook_delivery_endpoint_created", "endpoint_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoint.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(40))
    candidate_id: Mapped[Optional[int]] = mapped_column(ForeignKey("candidate.id", ondelete="SET NULL"))
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default=WebhookDeliveryStatus.SCHEDULED)
    scheduled_for: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    last_error: Mapped[Optional[str]] = mapped_column(String(1000))
    response_status: Mapped[Optional[int]] = mapped_column(Integer)
    delivered_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    # Retries stop here (24 h after the event, or after a Resend) and the delivery fails.
    give_up_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    endpoint: Mapped[WebhookEndpoint] = relationship()


class JobLease(db.Model):
    """Who runs a periodic job (the planner) until when: one holder per tick across processes."""

    __tablename__ = "job_lease"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    holder: Mapped[Optional[str]] = mapped_column(String(120))
    until: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)


class RateHit(db.Model):
    """One counted request for a rate limit (share-link sign-ups per link, address, e-mail)."""

    __tablename__ = "rate_hit"
    __table_args__ = (Index("ix_rate_hit_key_at", "key", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(300))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


# --- objects only the migrations describe -------------------------------------------------

def described_by_models(obj, name, type_, reflected, compare_to) -> bool:
    """Alembic's include_object: leave out the search objects the models cannot describe.

    Migration 0006_fast_candidate_lists makes them per database (SQLite: the FTS5 table
    ``candidate_search`` and its shadow tables; PostgreSQL: trigram GIN indexes named
    ``ix_candidate_search_*``), so autogenerate must neither drop nor recreate them.
    """
    return not (name or "").startswith(("candidate_search", "ix_candidate_search_"))


# --- operations: audit log, retention and backups, health -------------------------------

class AuditEntry(db.Model):
    """Who did what and when: one line of the audit log (kept ``audit_retention_days``).

    ``actor`` keeps the person's name and e-mail as they were, so an entry stays readable
    after the account is renamed or removed; ``actor_id`` is for filtering.
    """

    __tablename__ = "audit_entry"
    __table_args__ = (
        Index("ix_audit_entry_at", "at"),
        Index("ix_audit_entry_kind_at", "kind", "at"),
        Index("ix_audit_entry_actor_at", "actor_id", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor_id: Mapped[Optional[int]] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    actor: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(String(1000), default="")
    address: Mapped[Optional[str]] = mapped_column(String(64))


class OpsSettings(db.Model):
    """Retention, audit and backup settings, and the last backup's outcome; one row, id 1.

    Apart from ``Settings`` so the operations columns change without touching the team's
    messaging settings.
    """

    __tablename__ = "ops_settings"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Days a candidate's personal data is kept after they complete, expire or opt out.
    retention_days: Mapped[int] = mapped_column(Integer, default=180)
    audit_retention_days: Mapped[int] = mapped_column(Integer, default=730)
    backup_enabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    backup_keep: Mapped[int] = mapped_column(Integer, default=7)
    backup_hour: Mapped[int] = mapped_column(Integer, default=2)  # UTC hour of the nightly backup
    last_backup_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    last_backup_size: Mapped[Optional[int]] = mapped_column(BigInteger)
    last_backup_path: Mapped[Optional[str]] = mapped_column(String(1000))
    last_backup_error: Mapped[Optional[str]] = mapped_column(String(1000))
    last_backup_error_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)


class Heartbeat(db.Model):
    """When a periodic thing last completed (the scheduler's tick), for /healthz and metrics."""

    __tablename__ = "heartbeat"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    holder: Mapped[Optional[str]] = mapped_column(String(120))
