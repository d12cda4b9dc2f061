"""The JSON API: agents, creating candidates (with their link back), reading and listing them."""
from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

from flask import Response, current_app, g, request
from sqlalchemy import and_, or_, select

from .. import ratelimit
from ..candidates.services import ContactErrors
from ..clock import now
from ..errors import DomainError
from ..extensions import csrf, db
from ..integrations.intake import Applicant, add
from ..integrations.outbound import candidate_json
from ..messaging.services import public_url
from ..models import Agent, Candidate, Event
from ..transactions import write_unit
from . import bp, services
from .openapi import document

csrf.exempt(bp)

CREATE_FIELDS = {"name": str, "email": str, "phone": str, "timezone": str, "channel": str, "source_detail": str,
                 "external_id": str, "invite": bool}
MAX_PAGE = 200


def problem(status: int, title: str, detail: str = "", errors: dict | None = None, headers: dict | None = None):
    """An ``application/problem+json`` error (RFC 9457) with field names under ``errors``."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail or title}
    if errors:
        body["errors"] = errors
    return Response(json.dumps(body), status, headers=headers or {}, mimetype="application/problem+json")


def _json(status: int, data) -> Response:
    return Response(json.dumps(data), status, mimetype="application/json")


@bp.before_request
def authenticate():
    """Every route but the OpenAPI document needs a live key, within its rate limit."""
    if request.endpoint == "api.openapi":
        return None
    moment = now()
    key = services.authenticate(db.session, request.headers.get("Authorization"))
    if key is None:
        return problem(401, "Unauthorized", "Send a live API key as \"Authorization: Bearer <key>\".",
                       headers={"WWW-Authenticate": 'Bearer realm="milo"'})
    limit = ratelimit.Limit(f"api:{key.id}", current_app.config["MILO_API_RATE_PER_MINUTE"], timedelta(minutes=1))
    wait = ratelimit.retry_after(db.session, [limit], moment)
    if wait is not None:
        seconds = max(1, int(wait.total_seconds() + 0.999))
        return problem(429, "Too many requests", f"This key's limit is {limit.count} requests a minute.",
                       headers={"Retry-After": str(seconds)})
    # One short write (a GET included): count the hit and keep "last used" fresh.
    with write_unit(db.session) as work:
        ratelimit.hit(work, [limit], moment)
        if key.last_used_at is None or key.last_used_at < moment - timedelta(minutes=1):
            key.last_used_at = moment
            work.merge(key)
    g.api_key, g.now = key, moment
    return None


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3.1 document of this API."""
    return _json(200, document(public_url("/api/v1")))


@bp.get("/agents")
def agents():
    """Every interview agent that is not archived: id, title, share link."""
    rows = db.session.scalars(select(Agent).where(Agent.archived_at.is_(None)).order_by(Agent.id)).all()
    return _json(200, {"data": [{"id": a.id, "title": a.title, "share_link": public_url(f"/s/{a.share_token}")
                                 if a.share_open else None} for a in rows]})


def _agent(agent_id: int) -> Agent | None:
    return db.session.get(Agent, agent_id)


def _create_input(body) -> Applicant:
    if not isinstance(body, dict):
        raise ContactErrors({"body": "Send a JSON object."})
    errors = {}
    for name, value in body.items():
        kind = CREATE_FIELDS.get(name)
        if kind is None:
            errors[name] = "Unknown field."
        elif value is not None and not isinstance(value, kind):
            errors[name] = f"Must be {'true or false' if kind is bool else 'a string'}."
        elif kind is str and value is not None and len(value) > 200:
            errors[name] = "At most 200 characters."
    if errors:
        raise ContactErrors(errors)
    text = {k: (body.get(k) or "").strip() for k in CREATE_FIELDS if CREATE_FIELDS[k] is str}
    return Applicant(**text, invite=body.get("invite") is not False)


@bp.post("/agents/<int:agent_id>/candidates")
def create_candidate(agent_id: int):
    """Add a candidate to an agent (201), or return the existing one (200); with their link."""
    key, moment = g.api_key, g.now
    idem = (request.headers.get("Idempotency-Key") or "").strip()
    digest = services.request_hash(request.method, request.path, request.get_data(cache=True))
    if idem:
        try:
            stored = services.stored_response(db.session, key, idem, digest, moment)
        except DomainError as err:
            return problem(422, "Idempotency-Key reused", err.message, {"Idempotency-Key": err.message})
        if stored is not None:
            return Response(stored[1], stored[0], mimetype="application/json", headers={"Idempotent-Replayed": "true"})
    agent = _agent(agent_id)
    if agent is None:
        return problem(404, "Not found", f"There is no agent {agent_id}.")
    try:
        person = _create_input(request.get_json(silent=True))
        candidate, created = add(db.session, agent, person, moment, source="api", scope="api")
    except ContactErrors as err:
        db.session.rollback()
        return problem(422, "Invalid candidate", "Some fields are not valid; see errors.", err.errors)
    except DomainError as err:
        db.session.rollback()
        return problem(422, "Not possible", err.message, {err.field or "body": err.message})
    status = 201 if created else 200
    db.session.flush()
    body = json.dumps({**candidate_json(candidate), "created": created})
    if idem:
        services.store_response(db.session, key, idem, digest, status, body, moment)
    db.session.commit()
    response = Response(body, status, mimetype="application/json")
    if created:
        response.headers["Location"] = f"/api/v1/candidates/{candidate.id}"
    return response


@bp.get("/candidates/<int:candidate_id>")
def candidate(candidate_id: int):
    """One candidate: stage, timestamps, link and events."""
    found = db.session.get(Candidate, candidate_id)
    if found is None or found.erased_at is not None:
        return problem(404, "Not found", f"There is no candidate {candidate_id}.")
    events = db.session.scalars(select(Event).where(Event.candidate_id == found.id).order_by(Event.at, Event.id))
    data = candidate_json(found)
    data["events"] = [{"type": e.type, "at": e.at.isoformat().replace("+00:00", "Z"), "channel": e.channel,
                       "detail": e.detail} for e in events]
    return _json(200, data)


def _parse_time(raw: str) -> datetime:
    # A "+01:00" typed into a URL unencoded arrives as " 01:00": read it as the offset it was.
    raw = raw.strip()
    if len(raw) > 19 and raw[-6] == " " and raw[-3] == ":":
        raw = raw[:-6] + "+" + raw[-5:]
    value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _cursor(c: Candidate) -> str:
    return base64.urlsafe_b64encode(f"{c.updated_at.isoformat()}|{c.id}".encode()).decode()


@bp.get("/agents/<int:agent_id>/candidates")
def candidates_changed(agent_id: int):
    """Candidates of an agent changed since a moment, oldest change first, a page at a time."""
    if _agent(agent_id) is None:
        return problem(404, "Not found", f"There is no agent {agent_id}.")
    errors = {}
    query = select(Candidate).where(Candidate.agent_id == agent_id, Candidate.erased_at.is_(None))
    try:
        limit = int(request.args.get("limit", 50))
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError
    except ValueError:
        errors["limit"] = f"A whole number from 1 to {MAX_PAGE}."
        limit = 50
    if request.args.get("since"):
        try:
            query = query.where(Candidate.updated_at >= _parse_time(request.args["since"]))
        except ValueError:
            errors["since"] = "An ISO-8601 date-time, e.g. 2026-11-26T09:00:00Z."
    if request.args.get("cursor"):
        try:
            stamp, _, last_id = base64.urlsafe_b64decode(request.args["cursor"].encode()).decode().partition("|")
            after, last = _parse_time(stamp), int(last_id)
            query = query.where(or_(Candidate.updated_at > after,
                                    and_(Candidate.updated_at == after, Candidate.id > last)))
        except (ValueError, UnicodeDecodeError):
            errors["cursor"] = "Pass back the next_cursor of the previous page unchanged."
    if errors:
        return problem(422, "Invalid query", "Some parameters are not valid; see errors.", errors)
    rows = db.session.scalars(query.order_by(Candidate.updated_at, Candidate.id).limit(limit)).all()
    return _json(200, {"data": [candidate_json(c) for c in rows],
                       "next_cursor": _cursor(rows[-1]) if len(rows) == limit else None})
