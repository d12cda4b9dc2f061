"""What happens when a candidate uses their link: clicked, started, answered, completed."""
from __future__ import annotations

import hmac
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.orm import Session, joinedload, undefer
from sqlalchemy.orm.attributes import set_committed_value
from ua_parser import parse_device, parse_os

from .. import ratelimit
from ..candidates import services as candidates
from ..candidates import stages
from ..errors import DomainError
from ..models import Agent, Answer, Candidate, Event, Message, Question, Settings, Stage, User
from ..transactions import SqliteRead, one_statement_write, write_unit

MAX_ANSWER_LENGTH = 5000
TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
# Someone typing an existing e-mail on the share page gets the link re-sent at most this often.
RESEND_LINK_EVERY = timedelta(hours=1)


def warm_up() -> None:
    """Load the user-agent lists now (a fifth of a second), not during a candidate's first visit."""
    device_class("")


def device_class(user_agent: str | None) -> str:
    """Classify a user agent as mobile, tablet or desktop."""
    ua = user_agent or ""
    # Only the OS and device lists: matching the browser's as well took twice as long for a
    # user agent not seen before (about 1.4 ms instead of 0.8).
    os_, device_ = parse_os(ua), parse_device(ua)
    os_family = os_.family if os_ else ""
    device = device_.family if device_ else ""
    brand = (device_.brand or "") if device_ else ""
    if device == "iPad" or "Tablet" in brand or "Tablet" in ua:
        return "tablet"
    if os_family == "Android":
        return "mobile" if "Mobile" in ua else "tablet"
    if os_family in ("iOS", "Windows Phone", "BlackBerry OS", "KaiOS") or "Mobi" in ua:
        return "mobile"
    return "desktop"


# One query for the candidate, their interview, its owner (named in the help line), how many
# questions it has, and the team's help line: every candidate page needs them. Built once:
# every page view runs it, and building the statement and its cache key costs more than
# SQLite takes to answer it. The questions themselves load only on the pages that show one.
_agent = joinedload(Candidate.agent)
HELP_COLUMNS = (Settings.id, Settings.support_email, Settings.support_phone, Settings.company_name)
_BY_TOKEN = (select(Candidate, *HELP_COLUMNS).outerjoin(Settings, Settings.id == 1)
             .where(Candidate.token == bindparam("token"))
             .options(_agent.undefer(Agent.question_count), _agent.joinedload(Agent.owner)))


@dataclass(frozen=True)
class HelpLine:
    """Whom a candidate can ask for help: the team settings' contact fields."""

    support_email: str | None
    support_phone: str | None
    company_name: str | None

    @classmethod
    def from_row(cls, row) -> "HelpLine | None":
        """The help line from a row of ``HELP_COLUMNS``; None when the settings row is missing."""
        settings_id, email, phone, company = row
        return None if settings_id is None else cls(email, phone, company)


def find_with_help(session: Session, token: str) -> tuple[Candidate | None, HelpLine | None]:
    """The live candidate with this link token (or None) and the team's help line, in one query."""
    if not TOKEN_SHAPE.match(token or ""):
        return None, None
    row = session.execute(_BY_TOKEN, {"token": token}).first()
    if row is None:
        return None, None
    candidate, help_line = row[0], HelpLine.from_row(row[1:])
    if candidate.erased_at is not None:
        return None, help_line
    # The index finds the row; the final comparison does not leak timing.
    if not hmac.compare_digest(candidate.token.encode(), token.encode()):
        return None, help_line
    return candidate, help_line


def find_by_token(session: Session, token: str) -> Candidate | None:
    """The live candidate with this link token, or None (wrong, rotated and erased alike)."""
    return find_with_help(session, token)[0]


def find_agent_by_share_token(session: Session, token: str) -> Agent | None:
    """The agent with this share token, or None."""
    if not TOKEN_SHAPE.match(token or ""):
        return None
    agent = session.scalar(select(Agent).where(Agent.share_token == token).options(undefer(Agent.question_count)))
    if agent is None or not hmac.compare_digest(agent.share_token.encode(), token.encode()):
        return None
    return agent


# --- what the pages read ----------------------------------------------------------------------
# Showing a candidate page writes nothing, so it reads plain rows into frozen views rather
# than ORM objects: building instances, their identity map and lazy loads cost the page more
# than SQLite takes to answer. A page that must write (the first visit, an expiry) re-reads
# the candidate as an ORM object inside its write unit (``reload``); the POSTs, which write
# anyway, use ``find_with_help``.

@dataclass(frozen=True, slots=True)
class OwnerView:
    """The agent's owner, named in the help line when the team set none."""

    name: str
    email: str


@dataclass(frozen=True, slots=True)
class AgentView:
    """What candidate pages show of an interview agent."""

    id: int
    title: str
    company: str
    description: str
    duration_minutes: int
    deadline_days: int
    external_url: str | None
    archived_at: datetime | None
    share_token: str
    question_count: int
    owner: OwnerView | None


@dataclass(frozen=True, slots=True)
class CandidateView:
    """What candidate pages show and decide on for one candidate (read-only)."""

    id: int
    agent_id: int
    token: str
    name: str | None
    email: str | None
    phone: str | None
    timezone: str | None
    stage: str
    deadline_at: datetime | None
    visited_at: datetime | None
    opted_out_email: bool
    agent: AgentView


@dataclass(frozen=True, slots=True)
class QuestionView:
    """One question of the interview and this candidate's answer to it, if any."""

    id: int
    text: str
    answered: bool
    body: str | None


_c, _a, _u, _s, _q, _ans = (m.__table__ for m in (Candidate, Agent, User, Settings, Question, Answer))
_CANDIDATE_COLUMNS = (_c.c.id, _c.c.agent_id, _c.c.token, _c.c.name, _c.c.email, _c.c.phone, _c.c.timezone,
                      _c.c.stage, _c.c.deadline_at, _c.c.visited_at, _c.c.opted_out_email)
_AGENT_COLUMNS = (_a.c.title, _a.c.company, _a.c.description, _a.c.duration_minutes, _a.c.deadline_days,
                  _a.c.external_url, _a.c.archived_at, _a.c.share_token,
                  select(func.count(_q.c.id)).where(_q.c.agent_id == _a.c.id).scalar_subquery())
# Plain Core over the tables, run on the session's connection: no ORM loading step at all.
_VIEW_BY_TOKEN = (select(*_CANDIDATE_COLUMNS, *_AGENT_COLUMNS, _u.c.name, _u.c.email, _c.c.erased_at,
                         _s.c.id, _s.c.support_email, _s.c.support_phone, _s.c.company_name)
                  .join(_a, _a.c.id == _c.c.agent_id)
                  .outerjoin(_u, _u.c.id == _a.c.owner_id)
                  .outerjoin(_s, _s.c.id == 1)
                  .where(_c.c.token == bindparam("token")))
_QUESTIONS = (select(_q.c.id, _q.c.text, _ans.c.id.is_not(None), _ans.c.body)
              .outerjoin(_ans, (_ans.c.question_id == _q.c.id) & (_ans.c.candidate_id == bindparam("candidate")))
              .where(_q.c.agent_id == bindparam("agent"))
              .order_by(_q.c.position))
# On SQLite each runs as one statement in autocommit (transactions rule 8).
_VIEW_BY_TOKEN_SQLITE = SqliteRead(_VIEW_BY_TOKEN)
_QUESTIONS_SQLITE = SqliteRead(_QUESTIONS)
_AGENT_ID_AT, _TOKEN_AT = 1, 2  # where _CANDIDATE_COLUMNS puts them


def view_with_help(session: Session, token: str) -> tuple[CandidateView | None, HelpLine | None]:
    """The live candidate with this link token as a read-only view (or None), and the help line."""
    if not TOKEN_SHAPE.match(token or ""):
        return None, None
    if session.get_bind().dialect.name == "sqlite":
        found = _VIEW_BY_TOKEN_SQLITE.rows(session, token=token)
        row = found[0] if found else None
    else:
        row = session.connection().execute(_VIEW_BY_TOKEN, {"token": token}).first()
    if row is None:
        return None, None
    n_candidate, n_agent = len(_CANDIDATE_COLUMNS), len(_AGENT_COLUMNS)
    owner_name, owner_email, erased_at = row[n_candidate + n_agent:n_candidate + n_agent + 3]
    help_line = HelpLine.from_row(row[n_candidate + n_agent + 3:])
    # The index finds the row; the final comparison does not leak timing.
    if erased_at is not None or not hmac.compare_digest(row[_TOKEN_AT].encode(), token.encode()):
        return None, help_line
    owner = OwnerView(owner_name, owner_email) if owner_name is not None else None
    agent = AgentView(row[_AGENT_ID_AT], *row[n_candidate:n_candidate + n_agent - 1],
                      question_count=row[n_candidate + n_agent - 1], owner=owner)
    return CandidateView(*row[:n_candidate], agent=agent), help_line


def questions_of(session: Session, candidate: CandidateView) -> list[QuestionView]:
    """The interview's questions in order, each with this candidate's answer (one query)."""
    values = {"candidate": candidate.id, "agent": candidate.agent_id}
    if session.get_bind().dialect.name == "sqlite":
        found = _QUESTIONS_SQLITE.rows(session, **values)
    else:
        found = session.connection().execute(_QUESTIONS, values)
    return [QuestionView(*row) for row in found]


def first_unanswered_of(questions: list[QuestionView]) -> int | None:
    """1-based number of the first question without an answer, or None when all are done."""
    return next((i for i, q in enumerate(questions, start=1) if not q.answered), None)


def reload(session: Session, candidate: Candidate | CandidateView) -> Candidate:
    """The candidate as an ORM object, read again inside the caller's write unit."""
    if isinstance(candidate, Candidate):
        return candidate
    found = session.get(Candidate, candidate.id)
    if found is None:  # deleted between the read and the write: as for a wrong token
        raise LookupError(candidate.id)
    return found


class State:
    """What the candidate's link should show."""

    CLOSED = "closed"
    OPTED_OUT = "opted_out"
    EXPIRED = "expired"
    DONE = "done"
    LANDING = "landing"
    QUESTIONS = "questions"
    EXTERNAL = "external"


def state_of(candidate: Candidate, now: datetime) -> str:
    """Decide what the link shows now (it writes nothing: see ``expire_if_due``)."""
    if candidate.stage == Stage.COMPLETED:
        return State.DONE
    if candidate.stage == Stage.OPTED_OUT:
        return State.OPTED_OUT
    if candidate.agent.archived_at is not None:
        return State.CLOSED
    if candidate.stage == Stage.EXPIRED or (candidate.deadline_at and candidate.deadline_at <= now):
        return State.EXPIRED
    if candidate.stage == Stage.STARTED:
        return State.EXTERNAL if candidate.agent.external_url else State.QUESTIONS
    return State.LANDING


def expire_if_due(session: Session, candidate: Candidate, now: datetime) -> bool:
    """Expire a candidate whose deadline passed but who is not marked expired yet."""
    if candidate.deadline_at is None or candidate.deadline_at > now:
        return False
    return stages.move(session, candidate, Stage.EXPIRED, now, detail="deadline passed")


# A click is a human signal, not any GET: mail gateways (Safe Links, Proofpoint, Mimecast)
# fetch every link within seconds of delivery, with no cookies and no JavaScript. So a GET
# of the link only records a "visited" event; the click is counted on
#  - the landing page's beacon (static/js/seen.js: a real browser, on the first touch, key,
#    scroll or pointer press, or after the page has been visible for a few seconds),
#  - a form post (the candidate starting the interview), or
#  - a second visit at a human pace (HUMAN_RETURN after the first).
# Until then the candidate stays "invited" and the "not clicked yet" reminders keep going.
HUMAN_RETURN = timedelta(minutes=2)


def visit(session: Session, candidate: Candidate | CandidateView, now: datetime,
          user_agent: str | None) -> str | None:
    """Record a GET of the link in one short write unit; return "visited", "clicked" or None (nothing new).

    Decided in Python first (``visit_would_record``), so a repeat visit writes nothing. A
    first visit and a return visit that counts as the click are each two prepared
    statements on the view's ids: a conditional UPDATE and, only if it changed the row, the
    event (the same row values and event as ``stages.move`` writes for the click).
    """
    if not visit_would_record(candidate, now):
        return None
    returning = candidate.visited_at is not None
    # Parsed before the unit: reading an unseen user agent takes milliseconds of regular
    # expressions, which must not be spent holding the write lock.
    values = {"b_candidate": candidate.id, "b_agent": candidate.agent_id, "b_now": now,
              "b_device": device_class(user_agent)}
    with write_unit(session) as unit:
        conn = unit.connection()
        if conn.execute(_RETURN_CLICK if returning else _FIRST_VISIT, values).rowcount != 1:
            return None  # another request recorded it first, or the stage moved on meanwhile
        conn.execute(_CLICKED_EVENT if returning else _VISITED_EVENT, values)
    if isinstance(candidate, Candidate):
        # The row now holds these values: mirror them on the object without another query.
        changed = ({"stage": Stage.CLICKED, "updated_at": now, "last_activity_at": now, "clicked_at": now,
                    "device_class": values["b_device"]} if returning else {"visited_at": now})
        for key, value in changed.items():
            set_committed_value(candidate, key, value)
    return "clicked" if returning else "visited"


# The landing page's writes, built once: the first visit, and the return visit that counts
# as the click (what ``stages.move(..., Stage.CLICKED, device_class=..., detail=...)`` does,
# as two statements instead of an ORM reload, UPDATE and flush: "clicked" announces nothing
# to outbound webhooks, and the "not clicked yet" reminders are cancelled by the dispatcher,
# which re-checks the stage before every send).
_FIRST_VISIT = (_c.update().where(_c.c.id == bindparam("b_candidate"), _c.c.visited_at.is_(None))
                .values(visited_at=bindparam("b_now")))
_VISITED_EVENT = Event.__table__.insert().values(
    candidate_id=bindparam("b_candidate"), agent_id=bindparam("b_agent"), type="visited", at=bindparam("b_now"),
    device_class=bindparam("b_device"),
    detail="link opened; counted as a click once a person uses the page (mail scanners open every link)")
CAME_BACK = "came back to the link"
_RETURN_CLICK = (_c.update()
                 .where(_c.c.id == bindparam("b_candidate"), _c.c.stage.in_(stages.allowed_from(Stage.CLICKED)))
                 .values(stage=Stage.CLICKED, updated_at=bindparam("b_now"), last_activity_at=bindparam("b_now"),
                         clicked_at=bindparam("b_now"), device_class=bindparam("b_device")))
_CLICKED_EVENT = Event.__table__.insert().values(
    candidate_id=bindparam("b_candidate"), agent_id=bindparam("b_agent"), type=Stage.CLICKED, at=bindparam("b_now"),
    device_class=bindparam("b_device"), detail=CAME_BACK)


def visit_would_record(candidate: Candidate, now: datetime) -> bool:
    """Whether a GET of the link now changes anything (decided in Python, before any write)."""
    if not stages.can_move(candidate.stage, Stage.CLICKED):
        return False
    return candidate.visited_at is None or now - candidate.visited_at >= HUMAN_RETURN


def click(session: Session, candidate: Candidate, now: datetime, user_agent: str | None,
          via: str | None = None) -> bool:
    """Record the human click (the first one only; later ones change nothing)."""
    return stages.move(session, candidate, Stage.CLICKED, now, device_class=device_class(user_agent), detail=via)


# Known image proxies and scanners (their user agents say so). Apple's Mail Privacy
# Protection says nothing, but fetches on delivery: an open this soon after the send is a
# machine's too.
MACHINE_OPENER_AGENTS = ("GoogleImageProxy", "YahooMailProxy", "ggpht.com", "Outlook-iOS-Android/", "Barracuda",
                         "Mimecast", "Proofpoint", "python-requests", "curl/", "Go-http-client")
MACHINE_OPEN_WITHIN = timedelta(seconds=60)


def is_machine_open(user_agent: str | None, sent_at: datetime | None, now: datetime) -> bool:
    """Whether an open-pixel fetch was made by a machine (a proxy, a scanner) rather than a reader."""
    ua = user_agent or ""
    if not ua or any(marker in ua for marker in MACHINE_OPENER_AGENTS):
        return True
    return sent_at is not None and now - sent_at < MACHINE_OPEN_WITHIN


def start(session: Session, candidate: Candidate, name: str, email: str, now: datetime,
          user_agent: str | None = None) -> None:
    """The candidate confirmed name and e-mail: they have started."""
    name = (name or "").strip()
    errors = {}
    if not name:
        errors["name"] = "Please enter your name."
    elif len(name) > 200:
        errors["name"] = "Please shorten your name to under 200 characters."
    clean_email = candidate.email
    if (email or "").strip():
        try:
            clean_email = candidates.valid_email(email)
        except DomainError as err:
            errors["email"] = err.message
    elif not candidate.phone:
        errors["email"] = "Please enter your e-mail address so we can reach you."
    if clean_email and clean_email != candidate.email and "email" not in errors:
        other = candidates.find_existing(session, candidate.agent_id, clean_email, None)
        if other is not None and other.id != candidate.id:
            errors["email"] = "This e-mail is already registered for this interview. Use the link sent to it."
    if errors:
        raise candidates.ContactErrors(errors)
    if candidate.stage in (Stage.ADDED, Stage.INVITED, Stage.OPENED):
        click(session, candidate, now, user_agent)
    candidate.name = name
    candidate.email = clean_email
    stages.move(session, candidate, Stage.STARTED, now)


def first_unanswered(candidate: Candidate) -> int | None:
    """1-based number of the first question without an answer, or None when all are done."""
    answered = {a.question_id for a in candidate.answers}
    for i, q in enumerate(candidate.agent.questions, start=1):
        if q.id not in answered:
            return i
    return None


def answer(session: Session, candidate: Candidate, number: int, body: str, now: datetime) -> None:
    """Save (or replace) the answer to question ``number`` of a loaded candidate; an "answered" event.

    For callers holding ORM objects (the demo history, tests); the answer page uses ``save_answer``.
    """
    questions = candidate.agent.questions
    body = check_answer(questions, number, body)
    question = questions[number - 1]
    existing = next((a for a in candidate.answers if a.question_id == question.id), None)
    if existing is None:
        candidate.answers.append(Answer(question_id=question.id, position=number, question_text=question.text,
                                        body=body, answered_at=now))
    else:
        existing.body = body
        existing.answered_at = now
    candidate.last_activity_at = now
    stages.record(session, candidate, "answered", now, detail=f"question {number}")


class NotStarted(DomainError):
    """The candidate's stage moved on (completed, expired, opted out) before the answer landed."""


def check_answer(questions: Sequence, number: int, body: str) -> str:
    """The answer to save for question ``number``, stripped; DomainError saying what is wrong."""
    if not 1 <= number <= len(questions):
        raise DomainError("There is no such question.")
    body = (body or "").strip()
    if not body:
        raise DomainError("Please write an answer before you continue.", "answer")
    if len(body) > MAX_ANSWER_LENGTH:
        raise DomainError(f"Please keep your answer under {MAX_ANSWER_LENGTH} characters "
                          f"(it is {len(body)}).", "answer")
    return body


# The answer's write unit, built once (a statement built per request costs more to compile
# than SQLite takes to run it): the candidate is still started, the answer upserted, the event.
_STILL_STARTED = (_c.update().where(_c.c.id == bindparam("b_candidate"), _c.c.stage == Stage.STARTED)
                  .values(last_activity_at=bindparam("b_now"), updated_at=bindparam("b_now")))
_ANSWERED_EVENT = Event.__table__.insert().values(
    candidate_id=bindparam("b_candidate"), agent_id=bindparam("b_agent"), type="answered", at=bindparam("b_now"),
    detail=bindparam("b_detail"))
# One text for both databases: SQLAlchemy's dialect INSERT ... ON CONFLICT cannot be cached,
# so built as an expression it was compiled again for every answer (about a third of the
# write unit's Python time). Typed parameters keep the column types' conversions.
_UPSERT_ANSWER = text(
    "INSERT INTO answer (candidate_id, question_id, position, question_text, body, answered_at)"
    " VALUES (:b_candidate, :b_question, :b_number, :b_text, :b_body, :b_now)"
    " ON CONFLICT (candidate_id, question_id)"
    " DO UPDATE SET body = excluded.body, answered_at = excluded.answered_at"
).bindparams(*(bindparam(name, type_=_ans.c[column].type) for name, column in (
    ("b_candidate", "candidate_id"), ("b_question", "question_id"), ("b_number", "position"),
    ("b_text", "question_text"), ("b_body", "body"), ("b_now", "answered_at"))))


# On SQLite the three are one statement, an insert into a TEMP view whose INSTEAD OF trigger
# makes them (created on each connection by ``transactions.one_statement_write``): the write
# lock is then held for one call into SQLite, not across five calls and the Python between
# them. Under load, with a worker's threads taking turns on the GIL, the five-call unit held
# the lock 2-5 ms at the median and 8-15 ms at the 90th percentile, and answers queued on it.
_NOT_STARTED = "milo: the interview is no longer open for answers"
_SAVE_ANSWER_SETUP = f"""
CREATE TEMP VIEW IF NOT EXISTS milo_save_answer AS
    SELECT NULL AS candidate_id, NULL AS agent_id, NULL AS question_id, NULL AS position,
           NULL AS question_text, NULL AS body, NULL AS at, NULL AS detail;
CREATE TEMP TRIGGER IF NOT EXISTS milo_save_answer_insert INSTEAD OF INSERT ON milo_save_answer
BEGIN
    UPDATE candidate SET last_activity_at = NEW.at, updated_at = NEW.at
        WHERE id = NEW.candidate_id AND stage = '{Stage.STARTED}';
    SELECT RAISE(ABORT, '{_NOT_STARTED}') WHERE changes() = 0;
    INSERT INTO answer (candidate_id, question_id, position, question_text, body, answered_at)
        VALUES (NEW.candidate_id, NEW.question_id, NEW.position, NEW.question_text, NEW.body, NEW.at)
        ON CONFLICT (candidate_id, question_id) DO UPDATE SET body = excluded.body, answered_at = excluded.answered_at;
    INSERT INTO event (candidate_id, agent_id, type, at, detail)
        VALUES (NEW.candidate_id, NEW.agent_id, 'answered', NEW.at, NEW.detail);
END;
"""
_SAVE_ANSWER = ("INSERT INTO milo_save_answer (candidate_id, agent_id, question_id, position, question_text, body,"
                " at, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")


# An aware instant as the UTC columns store it on SQLite (``models.UTCDateTime``'s bind
# processor for that dialect), for the one statement that saves an answer there.
_sqlite_instant = _ans.c.answered_at.type.bind_processor(sqlite_dialect.dialect())


def save_answer(session: Session, candidate: CandidateView, questions: list[QuestionView], number: int,
                body: str, now: datetime) -> None:
    """Save (or replace) the answer to question ``number`` in one short write unit, with its event.

    Checked in Python first; the unit is three statements: a conditional UPDATE that the
    candidate is still started (``NotStarted`` otherwise), an upsert of the answer (unique per
    candidate and question) and the "answered" event. On SQLite the three are made by one
    statement (``_SAVE_ANSWER_SETUP``).
    """
    body = check_answer(questions, number, body)
    question = questions[number - 1]
    if session.get_bind().dialect.name == "sqlite":
        # The same three writes in one call into SQLite (transactions rule 7).
        try:
            one_statement_write(session, _SAVE_ANSWER_SETUP, _SAVE_ANSWER, (
                candidate.id, candidate.agent_id, question.id, number, question.text, body, _sqlite_instant(now),
                f"question {number}"))
        except sqlite3.IntegrityError as err:
            if _NOT_STARTED in str(err):
                raise NotStarted("This interview is no longer open for answers.") from None
            raise
        return
    values = {"b_candidate": candidate.id, "b_agent": candidate.agent_id, "b_question": question.id,
              "b_number": number, "b_text": question.text, "b_body": body, "b_now": now,
              "b_detail": f"question {number}"}
    with write_unit(session) as unit:
        conn = unit.connection()
        if conn.execute(_STILL_STARTED, values).rowcount != 1:
            raise NotStarted("This interview is no longer open for answers.")
        conn.execute(_UPSERT_ANSWER, values)
        conn.execute(_ANSWERED_EVENT, values)


def complete(session: Session, candidate: Candidate, now: datetime) -> bool:
    """Submit the interview once every question has an answer."""
    if first_unanswered(candidate) is not None:
        raise DomainError("Please answer every question before you submit.")
    return stages.move(session, candidate, Stage.COMPLETED, now)


def external_url(candidate: Candidate) -> str:
    """The external interview address, carrying the candidate's reference."""
    parts = urlsplit(candidate.agent.external_url)
    query = parse_qsl(parts.query, keep_blank_values=True) + [("milo_ref", candidate.token)]
    return urlunsplit(parts._replace(query=urlencode(query)))


@dataclass
class ShareOutcome:
    """What the share page did: a new candidate to continue with, or a link re-sent."""

    candidate: Candidate
    created: bool
    link_resent: bool = False


def join_via_share(session: Session, agent: Agent, name: str, email: str, phone: str, src: str | None,
                   now: datetime, user_agent: str | None, default_country: str, default_timezone: str) -> ShareOutcome:
    """Someone used the share link: make them a candidate who has clicked and started.

    If that e-mail is already a candidate of this agent, their interview is NOT opened here
    (anyone can type anyone's e-mail); their own link is queued to that address instead.
    """
    from ..agents.services import clean_source_tag

    if not agent.share_open:
        raise DomainError("This interview is closed.")
    channel = "email" if (email or "").strip() or not (phone or "").strip() else "sms"
    try:
        contact = candidates.clean_contact(
            candidates.ContactData(name=name, email=email, phone=phone, channel=channel),
            default_country, default_timezone)
    except candidates.ContactErrors as err:
        # Same rules as for recruiters, said to the candidate.
        if "name" in err.errors:
            err.errors["name"] = "Please enter your name."
        raise
    existing = candidates.find_existing(session, agent.id, contact.email, None if contact.email else contact.phone)
    if existing is not None:
        return ShareOutcome(existing, False, _resend_link(session, existing, now))
    deadline_at = candidates.deadline_from_date(
        candidates.default_deadline_date(agent, contact.timezone, now), contact.timezone, now)
    candidate, created = candidates.add_candidate(
        session, agent, contact, deadline_at, now, source="share_link", source_detail=clean_source_tag(src))
    if not created:
        return ShareOutcome(candidate, False, _resend_link(session, candidate, now))
    click(session, candidate, now, user_agent)
    stages.move(session, candidate, Stage.STARTED, now)
    # Their own link goes to the address they typed: they can come back later, and if a
    # stranger typed someone else's address, its owner hears of it.
    _resend_link(session, candidate, now, rule="Registered through the share link: their link to come back later")
    return ShareOutcome(candidate, True)


def share_limits(agent: Agent, client_address: str, email: str) -> list[ratelimit.Limit]:
    """Sign-ups through one share link: per link, per client address, per e-mail address.

    Generous for people (a career fair behind one address), tight for a script that tries
    addresses to learn who applied or to register people who did not.
    """
    limits = [ratelimit.Limit(f"share-link:{agent.id}", 30, timedelta(minutes=1)),
              ratelimit.Limit(f"share-from:{client_address}", 10, timedelta(minutes=10))]
    typed = (email or "").strip().lower()
    if typed:
        limits.append(ratelimit.Limit(f"share-email:{agent.id}:{typed}", 3, timedelta(hours=1)))
    return limits


def _resend_link(session: Session, candidate: Candidate, now: datetime,
                 rule: str = "Share link used again with this address") -> bool:
    """Queue the candidate's own link to their address, at most once an hour."""
    recent = session.scalar(
        select(Message.id).where(Message.candidate_id == candidate.id, Message.kind == "link_resend",
                                 Message.created_at > now - RESEND_LINK_EVERY).limit(1))
    if recent is not None or candidate.stage in (Stage.COMPLETED, Stage.OPTED_OUT):
        return recent is not None
    channel = "email" if candidate.email else candidate.channel
    try:
        # They are waiting for it right now: it goes at once, not in the next send window.
        candidates.queue_message(session, candidate, "link_resend", now, channel=channel, manual=False,
                                 rule=rule, immediate=True)
    except DomainError:
        return False
    return True
