"""Rules for interview agents, their questions and their share link."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload, selectinload

from ..errors import DomainError
from ..models import ROLE_LEVELS, Agent, Question, User, new_token

MAX_QUESTIONS = 30
MAX_QUESTION_LENGTH = 1000
SOURCE_TAG = re.compile(r"[^a-z0-9_-]+")
RULE_FIELDS = ("window_start_minute", "window_end_minute", "send_days", "initial_send_days",
               "reminder_offsets_hours", "nudge_lead_hours", "final_nudge_lead_hours", "followup_cap")
SUGGESTED_SOURCES = ("linkedin", "indeed", "greenhouse", "lever", "workday", "careers-page",
                     "referral", "job-fair", "flyer")


def suggested_channel(role_level: str) -> str:
    """Starting suggestion: SMS for entry-level (shift) roles, e-mail for the others."""
    return "sms" if role_level == "entry" else "email"


@dataclass
class AgentData:
    """The editable fields of an agent, as validated by the form."""

    title: str
    company: str
    role_level: str
    description: str
    duration_minutes: int
    deadline_days: int
    default_channel: str
    external_url: str | None
    owner_id: int | None
    rules: dict | None = None  # follow-up overrides; a None value means "team setting"


def _apply(session: Session, agent: Agent, data: AgentData) -> None:
    if data.role_level not in ROLE_LEVELS:
        raise DomainError("Choose entry, professional or senior.", "role_level")
    if data.owner_id is not None and session.get(User, data.owner_id) is None:
        raise DomainError("Choose an owner from the team.", "owner_id")
    agent.title = data.title.strip()
    agent.company = data.company.strip()
    agent.role_level = data.role_level
    agent.description = (data.description or "").strip()
    agent.duration_minutes = data.duration_minutes
    agent.deadline_days = data.deadline_days
    agent.default_channel = data.default_channel
    agent.external_url = (data.external_url or "").strip() or None
    agent.owner_id = data.owner_id
    for name, value in (data.rules or {}).items():
        if name not in RULE_FIELDS:
            raise DomainError(f"Unknown rule {name!r}.")
        setattr(agent, name, value)


def create_agent(session: Session, data: AgentData, questions: list[str] | None = None) -> Agent:
    """Create an agent, optionally with its first questions, in one transaction."""
    agent = Agent()
    _apply(session, agent, data)
    session.add(agent)
    for text in questions or []:
        text = text.strip()
        if text:
            _check_question(text)
            agent.questions.append(Question(text=text, position=len(agent.questions) + 1))
    if len(agent.questions) > MAX_QUESTIONS:
        raise DomainError(f"An interview can have at most {MAX_QUESTIONS} questions.", "questions")
    session.commit()
    return agent


def update_agent(session: Session, agent: Agent, data: AgentData) -> Agent:
    """Save edited fields of an agent."""
    _apply(session, agent, data)
    session.commit()
    return agent


def set_archived(session: Session, agent: Agent, archived: bool, now: datetime) -> None:
    """Archive (closes the share link) or bring back an agent."""
    agent.archived_at = now if archived else None
    session.commit()


# --- questions ----------------------------------------------------------------------------

def _check_question(text: str) -> str:
    text = (text or "").strip()
    if not text:
        raise DomainError("Write the question first.", "text")
    if len(text) > MAX_QUESTION_LENGTH:
        raise DomainError(f"Keep a question under {MAX_QUESTION_LENGTH} characters.", "text")
    return text


def add_question(session: Session, agent: Agent, text: str) -> Question:
    """Append a question at the end of the interview."""
    text = _check_question(text)
    if len(agent.questions) >= MAX_QUESTIONS:
        raise DomainError(f"An interview can have at most {MAX_QUESTIONS} questions.", "text")
    question = Question(text=text, position=len(agent.questions) + 1)
    agent.questions.append(question)
    session.commit()
    return question


def update_question(session: Session, question: Question, text: str) -> None:
    """Change a question's wording (answers already given keep the wording they answered)."""
    question.text = _check_question(text)
    session.commit()


def _renumber(agent: Agent, ordered: list[Question]) -> None:
    for position, question in enumerate(ordered, start=1):
        question.position = position
    agent.questions.sort(key=lambda q: q.position)


def move_question(session: Session, question: Question, direction: str) -> None:
    """Move a question one place up or down."""
    agent = question.agent
    ordered = list(agent.questions)
    i = ordered.index(question)
    j = i - 1 if direction == "up" else i + 1
    if direction not in ("up", "down"):
        raise DomainError("Move a question up or down.")
    if 0 <= j < len(ordered):
        ordered[i], ordered[j] = ordered[j], ordered[i]
        _renumber(agent, ordered)
        session.commit()


def delete_question(session: Session, question: Question) -> None:
    """Remove a question; answers already given to it are kept with its wording."""
    agent = question.agent
    agent.questions.remove(question)
    _renumber(agent, list(agent.questions))
    session.commit()


# --- share link ---------------------------------------------------------------------------

def clean_source_tag(value: str | None) -> str | None:
    """Turn a typed source name into a URL-safe tag such as ``careers-page`` (or None)."""
    if not value:
        return None
    tag = SOURCE_TAG.sub("-", value.strip().lower()).strip("-")[:40]
    return tag or None


def share_url(base_url: str, agent: Agent, src: str | None = None) -> str:
    """The agent's public share link, optionally tagged with ``?src=``."""
    url = f"{base_url}/s/{agent.share_token}"
    tag = clean_source_tag(src)
    return f"{url}?{urlencode({'src': tag})}" if tag else url


def rotate_share_token(session: Session, agent: Agent) -> None:
    """Give the agent a new share link; the old one stops working at once."""
    agent.share_token = new_token()
    session.commit()


def set_share_enabled(session: Session, agent: Agent, enabled: bool) -> None:
    """Turn the share link on or off."""
    agent.share_enabled = enabled
    session.commit()


# --- listing ------------------------------------------------------------------------------

def stage_counts(session: Session, agent_ids: list[int]) -> dict[int, dict[str, int]]:
    """Candidates per stage for each agent, from the maintained counts (never a recount)."""
    from ..candidates import tally  # (the candidates package imports this one's views)

    return tally.by_agent_and_stage(session, agent_ids)


def funnels(session: Session, agent_ids: list[int]) -> dict[int, dict]:
    """Each agent's funnel and completion rate, with the Metrics page's stage definitions."""
    from ..metrics import services as metrics  # (metrics reads agents, not the reverse)

    return metrics.agent_funnels(session, agent_ids)


def fold_counts_if_due(session: Session) -> bool:
    """Tidy the maintained counts first when many changes wait (see candidates.tally)."""
    from ..candidates import tally

    return tally.fold_if_due(session)


def list_agents(session: Session, archived: bool) -> list[Agent]:
    """Active (or archived) agents, newest first."""
    cond = Agent.archived_at.is_not(None) if archived else Agent.archived_at.is_(None)
    # The list shows each agent's owner and number of questions: load them with the agents.
    return list(session.scalars(select(Agent).where(cond)
                                .options(joinedload(Agent.owner), selectinload(Agent.questions))
                                .order_by(Agent.created_at.desc(), Agent.id.desc())))
