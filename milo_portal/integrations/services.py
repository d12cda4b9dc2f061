"""Admin rules for integrations: creating them, secrets and their rotation, job mapping, endpoints."""
from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta

from flask import abort
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import DomainError
from ..models import (INTEGRATION_KINDS, Agent, CandidateFile, Integration, IntegrationJob, WebhookDelivery,
                      WebhookEndpoint)
from .inbound import KIND_LABELS, MAPPABLE
from .outbound import check_url, is_public

GRACE = timedelta(hours=24)
# The outbound URL form's checkbox, named in the refusal that tells the admin to tick it.
ALLOW_PRIVATE_LABEL = "Allow private and loopback addresses"  # an old secret keeps working this long after a rotation


def new_secret() -> str:
    """A signing secret: 256 bits from ``secrets``."""
    return "whsec_" + secrets.token_urlsafe(32)


def get_integration(session: Session, integration_id: int) -> Integration:
    """The integration or 404."""
    found = session.get(Integration, integration_id)
    if found is None:
        abort(404)
    return found


def get_endpoint(session: Session, endpoint_id: int) -> WebhookEndpoint:
    """The outbound endpoint or 404."""
    found = session.get(WebhookEndpoint, endpoint_id)
    if found is None:
        abort(404)
    return found


def get_delivery(session: Session, delivery_id: int) -> WebhookDelivery:
    """The outbound delivery or 404."""
    found = session.get(WebhookDelivery, delivery_id)
    if found is None:
        abort(404)
    return found


def get_file(session: Session, candidate_id: int, file_id: int) -> CandidateFile:
    """A candidate's file or 404."""
    found = session.get(CandidateFile, file_id)
    if found is None or found.candidate_id != candidate_id:
        abort(404)
    return found


def _agent(session: Session, raw: str | None, field: str, required: bool = False) -> Agent | None:
    if not raw:
        if required:
            raise DomainError("Choose an interview agent.", field)
        return None
    try:
        agent = session.get(Agent, int(raw))
    except ValueError:
        agent = None
    if agent is None:
        raise DomainError("Choose an interview agent from the list.", field)
    return agent


def create_integration(session: Session, kind: str, name: str, now: datetime) -> tuple[Integration, str]:
    """Make an inbound integration; return it and its secret (shown once)."""
    if kind not in INTEGRATION_KINDS:
        raise DomainError("Choose a kind from the list.", "kind")
    name = (name or "").strip() or KIND_LABELS[kind]
    if len(name) > 100:
        raise DomainError("Keep the name under 100 characters.", "name")
    secret = new_secret()
    integration = Integration(kind=kind, name=name, secret=secret, field_map="{}", invite=True, active=True,
                              created_at=now)
    session.add(integration)
    session.flush()
    return integration, secret


def set_secret(integration: Integration, secret: str | None, now: datetime) -> str:
    """Rotate the secret (the old one works for GRACE more); a pasted one (Indeed's API secret) or a new one."""
    secret = (secret or "").strip() or new_secret()
    if len(secret) < 16 or len(secret) > 200:
        raise DomainError("A secret has 16 to 200 characters.", "secret")
    integration.previous_secret, integration.previous_until = integration.secret, now + GRACE
    integration.secret = secret
    return secret


def set_api_key(integration: Integration, key: str | None) -> None:
    """Save the API key an integration reads its sender's API with (Lever); refused for other kinds."""
    if integration.kind != "lever":
        raise DomainError("Only a Lever integration reads an API.", "api_key")
    key = (key or "").strip()
    if not key or len(key) > 200 or any(ch.isspace() or ord(ch) < 32 for ch in key):
        raise DomainError("Paste the API key Lever showed when it was made (one line, at most 200 characters).",
                          "api_key")
    integration.api_key = key


def update_settings(session: Session, integration: Integration, form) -> None:
    """Save the default agent, invite and on/off switches and the field mapping."""
    agent = _agent(session, form.get("default_agent_id"), "default_agent_id")
    integration.default_agent_id = agent.id if agent else None
    integration.invite = form.get("invite") == "y"
    integration.active = form.get("active") == "y"
    mapping = {}
    for name in MAPPABLE:
        value = (form.get(f"map_{name}") or "").strip()
        if len(value) > 200:
            raise DomainError("Keep each path under 200 characters.", f"map_{name}")
        if value:
            mapping[name] = value
    integration.field_map = json.dumps(mapping)


def map_job(session: Session, integration: Integration, external_job: str, agent_raw: str | None) -> IntegrationJob:
    """Send applicants of an external job to an agent (replacing an earlier mapping of that job)."""
    external_job = (external_job or "").strip()
    if not external_job or len(external_job) > 200:
        raise DomainError("Give the job's id as the ATS sends it (at most 200 characters).", "external_job")
    agent = _agent(session, agent_raw, "agent_id", required=True)
    row = session.scalar(select(IntegrationJob).where(IntegrationJob.integration_id == integration.id,
                                                      IntegrationJob.external_job == external_job))
    if row is None:
        row = IntegrationJob(integration_id=integration.id, external_job=external_job, agent_id=agent.id)
        session.add(row)
    row.agent_id = agent.id
    return row


def create_endpoint(session: Session, url: str, agent_raw: str | None, allow_private: bool,
                    now: datetime) -> tuple[WebhookEndpoint, str]:
    """Add an outbound URL; refuse a private or loopback address unless allowed. Return it and its secret."""
    url = (url or "").strip()
    if len(url) > 2000:
        raise DomainError("Keep the URL under 2000 characters.", "url")
    _scheme, host, _port = check_url(url)
    if not allow_private:
        # A literal address or a local name is refused now; names are checked again at
        # every delivery (DNS may change), before connecting.
        try:
            literal = not is_public(host.strip("[]"))
        except ValueError:
            literal = host.lower() in ("localhost",) or host.lower().endswith((".localhost", ".local", ".internal"))
        if literal:
            raise DomainError(f"This is a private or loopback address: tick \"{ALLOW_PRIVATE_LABEL}\" "
                              "if it really is the target.", "url")
    agent = _agent(session, agent_raw, "agent_id")
    secret = new_secret()
    endpoint = WebhookEndpoint(url=url, agent_id=agent.id if agent else None, secret=secret, active=True,
                               allow_private=allow_private, created_at=now)
    session.add(endpoint)
    session.flush()
    return endpoint, secret


RECIPE_ATS = ("icims", "bullhorn", "rippling", "manatal", "jobvite", "bamboohr", "smartrecruiters", "other")


def recipe(agent: Agent, ats: str, share_url: str, company: str) -> dict:
    """The e-mail automation recipe: the tagged share link and an invite text to paste into the ATS."""
    tag = ats if ats in RECIPE_ATS else "other"
    link = f"{share_url}?src={tag}"
    text = (f"Hi {{{{first name}}}},\n\nThank you for applying for {agent.title} at {company or 'our company'}. "
            f"The next step is a short interview you can do online, whenever suits you (about "
            f"{agent.duration_minutes} minutes):\n\n{link}\n\nPlease complete it within {agent.deadline_days} days."
            f"\n\nBest regards,\nThe recruiting team")
    return {"tag": tag, "link": link, "text": text}
