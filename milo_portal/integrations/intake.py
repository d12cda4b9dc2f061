"""Candidates from other systems (the API, ATS and Indeed webhooks), through the one adding path.

Everything goes through ``candidates.services.clean_contact()`` and ``add_candidate()``
(normalising, duplicates, the time zone from the phone, the invite in the outbox); this
module only adds the other system's id, which deduplicates before the e-mail does.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..candidates import services as candidates
from ..errors import DomainError
from ..messaging.channels import texts_can_go
from ..models import CHANNELS, Agent, Candidate, ExternalRef
from ..settings.services import get_settings


@dataclass
class Applicant:
    """What another system tells us about a person."""

    name: str = ""
    email: str = ""
    phone: str = ""
    timezone: str = ""
    channel: str = ""
    source_detail: str = ""
    external_id: str = ""
    invite: bool = True


def find_by_ref(session: Session, scope: str, external_id: str) -> Candidate | None:
    """The candidate another system already gave us under this id (not erased), if any."""
    if not external_id:
        return None
    candidate = session.scalar(select(Candidate).join(ExternalRef, ExternalRef.candidate_id == Candidate.id)
                               .where(ExternalRef.scope == scope, ExternalRef.external_id == external_id[:200]))
    return candidate if candidate is not None and candidate.erased_at is None else None


def _channel(agent: Agent, person: Applicant) -> str:
    if person.channel:
        return person.channel
    # The interview's channel when the person can be reached on it, else what they gave.
    # Texts only when they can really go: with no recruiter in the loop, an applicant who
    # gave an e-mail address is invited by e-mail while SMS and WhatsApp are not set up.
    if agent.default_channel == "email" and person.email.strip():
        return "email"
    if agent.default_channel in ("sms", "whatsapp") and person.phone.strip() and (
            texts_can_go() or not person.email.strip()):
        return agent.default_channel
    if agent.default_channel == "link":
        return "link"
    return "email" if person.email.strip() or not person.phone.strip() else "sms"


def clean(session: Session, agent: Agent, person: Applicant) -> candidates.CleanContact:
    """Validate what would be added, changing nothing; raise ContactErrors naming each bad field."""
    settings = get_settings(session)
    if person.channel and person.channel not in CHANNELS:
        raise candidates.ContactErrors({"channel": f"Use one of: {', '.join(CHANNELS)}."})
    data = candidates.ContactData(name=person.name or "", email=person.email or "", phone=person.phone or "",
                                  timezone=person.timezone or "", channel=_channel(agent, person))
    return candidates.clean_contact(data, settings.default_country, settings.default_timezone, require_name=False)


def add(session: Session, agent: Agent, person: Applicant, now: datetime, *, source: str,
        scope: str) -> tuple[Candidate, bool]:
    """Add (or find) the person in ``agent``; return (candidate, created). The caller commits."""
    if agent.archived_at is not None:
        raise DomainError("This interview is archived: it takes no new candidates.", "agent_id")
    existing = find_by_ref(session, scope, person.external_id)
    if existing is not None:
        return existing, False
    contact = clean(session, agent, person)
    # The interview's default deadline, counted in the candidate's zone and again from the
    # moment their invite really goes (as for a recruiter who keeps the pre-filled date).
    day = candidates.default_deadline_date(agent, contact.timezone, now)
    deadline_at = candidates.deadline_from_date(day, contact.timezone, now)
    candidate, created = candidates.add_candidate(
        session, agent, contact, deadline_at, now, source=source,
        source_detail=(person.source_detail or "")[:100] or None, invite_now=person.invite,
        deadline_follows_invite=True)
    if person.external_id:
        try:
            with session.begin_nested():
                session.add(ExternalRef(scope=scope, external_id=person.external_id[:200], candidate_id=candidate.id))
        except IntegrityError:
            pass  # the same id arrived twice at once: the other request recorded it
    return candidate, created
