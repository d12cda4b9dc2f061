"""Inbound integration webhooks: check the signature, read the payload, add the candidate.

One endpoint per configured integration (``/hooks/<kind>/<token>``). The signature is
checked against the raw body before anything is parsed; event ids are kept in
``WebhookReceipt`` so a replay does nothing; every post is written to the delivery log,
including the ones refused and the jobs that map to no agent.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from ..candidates import services as candidates
from ..candidates import stages
from ..errors import DomainError
from ..hooks.services import first_time
from ..models import (Agent, Candidate, CandidateFile, Integration, IntegrationDelivery, IntegrationJob, Stage,
                      WebhookReceipt)
from ..transactions import end_transaction
from . import lever, signing
from .intake import Applicant, add, clean, find_by_ref

MAX_BODY = 1024 * 1024  # 1 MiB: an applicant is a few kilobytes
MAX_BODY_WITH_RESUME = 8 * 1024 * 1024  # Indeed posts carry the resume, base64
MAX_RESUME = 5 * 1024 * 1024
BODY_KEPT = timedelta(days=7)  # the delivery log keeps bodies this long (they hold personal data)
LOGGED_BODY = 64 * 1024  # a body larger than this is kept only when it can be processed again
PROCESS_AGAIN = ("no_agent", "error")  # outcomes whose kept body can be processed again from the log
DROPPABLE = ("phone", "timezone")  # fields an applicant with an e-mail is added without, when unreadable
SOURCES = {"generic": "api", "greenhouse": "ats", "workable": "ats", "lever": "ats", "indeed": "indeed"}
KIND_LABELS = {"generic": "Generic signed webhook", "greenhouse": "Greenhouse", "indeed": "Indeed Apply",
               "workable": "Workable", "lever": "Lever", "completion": "External interview completion"}
MAPPABLE = ("event_id", "job", "name", "first_name", "last_name", "email", "phone", "timezone", "external_id",
            "source_detail")
DEFAULT_MAPS = {
    "generic": {"event_id": "id", "job": "job_id", "name": "name", "first_name": "first_name",
                "last_name": "last_name", "email": "email", "phone": "phone", "timezone": "timezone",
                "external_id": "id", "source_detail": "source"},
    "lever": {"event_id": "token", "job": "data.postingId", "name": "data.name", "first_name": "", "last_name": "",
              "email": "data.email", "phone": "data.phone", "timezone": "", "external_id": "data.opportunityId",
              "source_detail": ""},
}
# Resume types Indeed sends, and how each file starts.
RESUME_TYPES = {
    "application/pdf": (b"%PDF-",),
    "application/msword": (b"\xd0\xcf\x11\xe0",),
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": (b"PK\x03\x04",),
    "application/rtf": (b"{\\rtf",),
    "text/rtf": (b"{\\rtf",),
    "text/plain": (),
    "text/html": (),
}


class Refused(Exception):
    """A post we answer with an error status; ``outcome`` and ``detail`` go to the delivery log."""

    def __init__(self, status: int, outcome: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.outcome, self.detail = status, outcome, detail


@dataclass
class Parsed:
    """What a payload says, whatever its sender's shape."""

    event_id: str = ""
    job: str = ""
    person: Applicant = field(default_factory=Applicant)
    resume: dict | None = None
    ignore: str = ""  # a ping or an event we do not act on: answered 200, logged as ignored
    milo_ref: str = ""
    status: str = ""
    # (opportunity id, application id) of a Lever event whose applicant is read from Lever's API
    lookup: tuple[str, str] | None = None
    problem: str = ""  # why it cannot be acted on as it is (logged as an error that can be processed again)


def get_path(data, path: str):
    """The value at a dotted path (``applicant.contact.email``, ``emails.0.value``) or None."""
    if not path:
        return None
    value = data
    for part in path.replace("[", ".").replace("]", "").split("."):
        if part == "":
            continue
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
        if value is None:
            return None
    return value


def _text(value) -> str:
    if value is None or isinstance(value, (dict, list)):
        return ""
    if isinstance(value, bool):
        return ""
    return str(value).strip()


def field_map(integration: Integration) -> dict[str, str]:
    """The integration's dotted paths per field (its own over the kind's defaults)."""
    mapping = dict(DEFAULT_MAPS.get(integration.kind, DEFAULT_MAPS["generic"]))
    try:
        own = json.loads(integration.field_map or "{}")
    except ValueError:
        own = {}
    mapping.update({k: str(v) for k, v in own.items() if k in MAPPABLE and isinstance(v, str)})
    return mapping


def _mapped(data: dict, mapping: dict[str, str]) -> Parsed:
    def value(name):
        return _text(get_path(data, mapping.get(name, "")))

    name = value("name") or " ".join(p for p in (value("first_name"), value("last_name")) if p)
    return Parsed(event_id=value("event_id"), job=value("job"), person=Applicant(
        name=name, email=value("email"), phone=value("phone"), timezone=value("timezone"),
        external_id=value("external_id"), source_detail=value("source_detail")))


def _first_value(items) -> str:
    if isinstance(items, list):
        for item in items:
            text = _text(item.get("value") if isinstance(item, dict) else item)
            if text:
                return text
    return ""


def _greenhouse(data: dict, event_id: str) -> Parsed:
    action = _text(data.get("action"))
    if action == "ping" or not action:
        return Parsed(event_id=event_id, ignore="ping")
    if action not in ("new_candidate_application", "application_updated"):
        return Parsed(event_id=event_id, ignore=f"event {action} is not acted on")
    payload = data.get("payload") if isinstance(data.get("payload"), dict) else {}
    application = payload.get("application") if isinstance(payload.get("application"), dict) else {}
    person = application.get("candidate") if isinstance(application.get("candidate"), dict) else (
        payload.get("candidate") if isinstance(payload.get("candidate"), dict) else {})
    jobs = application.get("jobs") if isinstance(application.get("jobs"), list) else []
    job = _text(jobs[0].get("id")) if jobs and isinstance(jobs[0], dict) else ""
    name = " ".join(p for p in (_text(person.get("first_name")), _text(person.get("last_name"))) if p)
    return Parsed(event_id=event_id or f"{action}:{_text(application.get('id'))}", job=job, person=Applicant(
        name=name, email=_first_value(person.get("email_addresses")), phone=_first_value(person.get("phone_numbers")),
        external_id=_text(person.get("id")) or _text(application.get("candidate_id")), source_detail="greenhouse"))


def _indeed(data: dict) -> Parsed:
    applicant = data.get("applicant") if isinstance(data.get("applicant"), dict) else {}
    job = data.get("job") if isinstance(data.get("job"), dict) else {}
    resume = get_path(applicant, "resume.file")
    return Parsed(event_id=_text(data.get("id")), job=_text(job.get("jobId")), resume=resume if isinstance(
        resume, dict) else None, person=Applicant(
        name=_text(applicant.get("fullName")) or " ".join(
            p for p in (_text(applicant.get("firstName")), _text(applicant.get("lastName"))) if p),
        email=_text(applicant.get("email")), phone=_text(applicant.get("phoneNumber")),
        external_id=_text(data.get("id")), source_detail="indeed"))


def _workable(data: dict) -> Parsed:
    event = _text(data.get("event_type"))
    person = data.get("data") if isinstance(data.get("data"), dict) else {}
    if event != "candidate_created":
        return Parsed(event_id=f"{event}:{_text(person.get('id'))}", ignore=f"event {event or '(none)'} is not acted on")
    job = person.get("job") if isinstance(person.get("job"), dict) else {}
    name = _text(person.get("name")) or " ".join(
        p for p in (_text(person.get("firstname")), _text(person.get("lastname"))) if p)
    return Parsed(event_id=f"{event}:{_text(person.get('id'))}", job=_text(job.get("shortcode")), person=Applicant(
        name=name, email=_text(person.get("email")), phone=_text(person.get("phone")),
        external_id=_text(person.get("id")), source_detail="workable"))


def _lever_event(data: dict) -> Parsed:
    """A Lever event as Lever sends it (ids only): the applicant is read from Lever's API."""
    event = _text(data.get("event"))
    payload = data.get("data") if isinstance(data.get("data"), dict) else {}
    opportunity, application = _text(payload.get("opportunityId")), _text(payload.get("applicationId"))
    # One application is created once: its id is the event's, whatever Lever's token holds.
    event_id = f"{event}:{application or opportunity}" if application or opportunity else ""
    if event != "applicationCreated":
        return Parsed(event_id=event_id, ignore=f"event {event or '(none)'} is not acted on")
    return Parsed(event_id=event_id, lookup=(opportunity, application),
                  person=Applicant(external_id=opportunity, source_detail="lever"))


def _lever_mapped(data: dict, parsed: Parsed) -> Parsed:
    """A Lever post read by the field mapping (no API key saved): middleware's fields, or ids only."""
    payload = data.get("data") if isinstance(data.get("data"), dict) else {}
    if parsed.person.email or parsed.person.phone or not _text(payload.get("opportunityId")):
        return parsed  # what a middleware added
    event = _text(data.get("event"))
    if event != "applicationCreated":
        parsed.ignore = f"event {event or '(none)'} is not acted on"
    else:
        parsed.problem = ("Lever's event carries ids only: save a Lever API key on this integration's page, "
                          "then process it again")
    return parsed


def secrets_of(integration: Integration, now: datetime) -> list[str]:
    """The secrets a post may be signed with: the current one, and the old one during its grace period."""
    found = [integration.secret]
    if integration.previous_secret and integration.previous_until and integration.previous_until > now:
        found.append(integration.previous_secret)
    return found


def verify(integration: Integration, headers, body: bytes, now: datetime) -> None:
    """Check the post's signature by the integration's scheme; raise Refused (401) if it fails."""
    secrets = secrets_of(integration, now)
    try:
        if integration.kind in ("generic", "completion"):
            signing.verify_milo(secrets, headers.get("X-Milo-Signature", ""), body, now)
        elif integration.kind == "greenhouse":
            signing.verify_greenhouse(secrets, headers.get("Signature", ""), body)
        elif integration.kind == "indeed":
            signing.verify_indeed(secrets, headers.get("X-Indeed-Signature", ""), body)
        elif integration.kind == "workable":
            signing.verify_hex_body(secrets, headers.get("X-Workable-Signature", ""), body)
        elif integration.kind == "lever":
            data = _json(body)
            signing.verify_lever(secrets, _text(data.get("token")), data.get("triggeredAt"),
                                 _text(data.get("signature")), now)
    except signing.SignatureError as err:
        raise Refused(401, "rejected", f"Signature refused: {err.reason}") from None


def _json(body: bytes) -> dict:
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "error", "The body is not JSON.") from None
    if not isinstance(data, dict):
        raise Refused(400, "error", "The body must be a JSON object.")
    return data


def parse(integration: Integration, headers, body: bytes) -> Parsed:
    """What the (already verified) body says, by the integration's kind.

    A post without an event id is known by the hash of its signature and body, so replaying
    the very same request is still caught.
    """
    parsed = _parse(integration, headers, body)
    if not parsed.event_id:
        signed = (headers.get("X-Milo-Signature", "") or headers.get("Signature", "")).encode()
        parsed.event_id = "sha256:" + hashlib.sha256(signed + b"\n" + body).hexdigest()
    return parsed


def _parse(integration: Integration, headers, body: bytes) -> Parsed:
    data = _json(body)
    if integration.kind == "greenhouse":
        return _greenhouse(data, _text(headers.get("Greenhouse-Event-ID")))
    if integration.kind == "indeed":
        return _indeed(data)
    if integration.kind == "workable":
        return _workable(data)
    if integration.kind == "completion":
        status = _text(data.get("status")).lower()
        return Parsed(event_id=_text(data.get("id")) or _text(headers.get("X-Milo-Event-Id")),
                      milo_ref=_text(data.get("milo_ref")), status=status)
    if integration.kind == "lever" and integration.api_key:
        return _lever_event(data)
    parsed = _mapped(data, field_map(integration))
    parsed.event_id = parsed.event_id or _text(headers.get("X-Milo-Event-Id"))
    return _lever_mapped(data, parsed) if integration.kind == "lever" else parsed


def _seen(session: Session, integration: Integration, event_id: str) -> bool:
    return session.scalar(select(WebhookReceipt.id).where(
        WebhookReceipt.source == f"integration:{integration.id}",
        WebhookReceipt.event_id == event_id[:200])) is not None


def fill(session: Session, integration: Integration, parsed: Parsed, api: lever.Api) -> None:
    """Read the applicant an event names by id only (Lever) from the sender's API, with no transaction open.

    The caller's transaction ends first (it has written nothing yet); a replay is answered
    without asking. Raises Refused (502, "error") with the reason when the applicant cannot
    be read: the delivery log keeps the post, and "Process again" tries again.
    """
    if parsed.lookup is None or parsed.ignore:
        return
    if parsed.event_id and _seen(session, integration, parsed.event_id):
        return  # handle() answers it as a replay
    key = integration.api_key or ""
    end_transaction(session)
    try:
        found = lever.fetch(session, api, key, *parsed.lookup)
    except lever.Unavailable as err:
        raise Refused(502, "error", f"could not read the applicant from Lever: {err.reason}") from None
    parsed.job = found.posting
    parsed.person = Applicant(name=found.name, email=found.email, phone=found.phone,
                              external_id=parsed.lookup[0], source_detail="lever")


def agent_for(session: Session, integration: Integration, job: str) -> Agent | None:
    """The agent an external job maps to (the table on the page), else the integration's default."""
    if job:
        agent = session.scalar(select(Agent).join(IntegrationJob, IntegrationJob.agent_id == Agent.id).where(
            IntegrationJob.integration_id == integration.id, IntegrationJob.external_job == job[:200]))
        if agent is not None:
            return agent
    if integration.default_agent_id:
        return session.get(Agent, integration.default_agent_id)
    return None


def check_resume(resume: dict | None) -> tuple[str, str, bytes]:
    """(file name, content type, bytes) of an Indeed resume; raise DomainError if it is not acceptable."""
    if not resume:
        raise DomainError("no resume")
    content_type = _text(resume.get("contentType")).lower().split(";")[0]
    filename = _text(resume.get("fileName"))[:255] or "resume"
    if content_type not in RESUME_TYPES:
        raise DomainError(f"resume type {content_type or '(none)'} is not accepted")
    raw = resume.get("data")
    if not isinstance(raw, str) or len(raw) > MAX_RESUME * 4 // 3 + 4:
        raise DomainError(f"resume missing or larger than {MAX_RESUME // (1024 * 1024)} MB")
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise DomainError("resume is not valid base64") from None
    if not data or len(data) > MAX_RESUME:
        raise DomainError(f"resume empty or larger than {MAX_RESUME // (1024 * 1024)} MB")
    magics = RESUME_TYPES[content_type]
    if magics and not data.startswith(magics):
        raise DomainError(f"resume is not what its contentType says ({content_type})")
    if not magics:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise DomainError(f"resume is not what its contentType says ({content_type})") from None
        if "\x00" in text:
            raise DomainError(f"resume is not what its contentType says ({content_type})")
    return filename, content_type, data


@dataclass
class Outcome:
    """What a post did: its status code, the delivery-log outcome and detail, the candidate."""

    status: int
    outcome: str
    detail: str
    candidate: Candidate | None = None


def _complete(session: Session, integration: Integration, parsed: Parsed, now: datetime) -> Outcome:
    if parsed.status not in ("started", "completed"):
        return Outcome(422, "error", "status must be \"started\" or \"completed\"")
    candidate = session.scalar(select(Candidate).where(Candidate.token == parsed.milo_ref[:64],
                                                       Candidate.erased_at.is_(None))) if parsed.milo_ref else None
    if candidate is None:
        return Outcome(404, "error", f"no candidate with milo_ref {parsed.milo_ref[:40]!r}")
    if not candidate.agent.external_url:
        return Outcome(422, "error", "this candidate's interview does not run elsewhere")
    target = Stage.STARTED if parsed.status == "started" else Stage.COMPLETED
    moved = stages.move(session, candidate, target, now, detail=f"reported by {integration.name}"[:500])
    return Outcome(200, "updated" if moved else "ignored",
                   f"{'marked' if moved else 'already past'} {parsed.status}", candidate)


def usable_contact(session: Session, agent: Agent, person: Applicant) -> list[str]:
    """Make an applicant addable without a recruiter: an unreadable phone or time zone is left out.

    With no one in the loop to correct it, an applicant who gave a good e-mail address is
    better invited without the phone than not at all. Changes ``person`` and returns notes
    for the delivery log; raises ContactErrors when the applicant cannot be added anyway.
    """
    try:
        clean(session, agent, person)
        return []
    except candidates.ContactErrors as err:
        if not person.email or not set(err.errors) <= set(DROPPABLE):
            raise
        notes = []
        for name in err.errors:
            setattr(person, name, "")
            notes.append(f"{name} not kept: {err.errors[name].rstrip('.')}")
        clean(session, agent, person)
        return notes


def handle(session: Session, integration: Integration, parsed: Parsed, now: datetime) -> Outcome:
    """Act on a verified post: replays and pings do nothing, unknown jobs are logged, else add."""
    if parsed.event_id and not first_time(session, f"integration:{integration.id}", parsed.event_id, now):
        return Outcome(200, "ignored", f"replay of event {parsed.event_id[:100]}: nothing done")
    if parsed.ignore:
        return Outcome(200, "ignored", parsed.ignore)
    if parsed.problem:
        return Outcome(422, "error", parsed.problem)
    if integration.kind == "completion":
        return _complete(session, integration, parsed, now)
    agent = agent_for(session, integration, parsed.job)
    if agent is None:
        # Not processed: the event id is given back, so the sender's retry (or "Process
        # again" on the log) adds the applicant once the job is mapped.
        if parsed.event_id:
            session.execute(delete(WebhookReceipt).where(WebhookReceipt.source == f"integration:{integration.id}",
                                                         WebhookReceipt.event_id == parsed.event_id[:200]))
        return Outcome(200, "no_agent", f"no agent for job {parsed.job or '(none)'}")
    person = parsed.person
    person.invite = integration.invite
    try:
        scope = f"integration:{integration.id}"
        notes = [] if find_by_ref(session, scope, person.external_id) else usable_contact(session, agent, person)
        candidate, created = add(session, agent, person, now, source=SOURCES[integration.kind], scope=scope)
    except candidates.ContactErrors as err:
        return Outcome(422, "error", "; ".join(f"{k}: {v}" for k, v in err.errors.items())[:500])
    except DomainError as err:
        return Outcome(422, "error", err.message[:500])
    detail = f"{'added' if created else 'already a candidate'}: {candidate.name or candidate.email} to {agent.title}"
    if notes and created:
        detail += "; " + "; ".join(notes)
    if parsed.resume is not None and created:
        try:
            filename, content_type, data = check_resume(parsed.resume)
        except DomainError as err:
            detail += f"; resume refused: {err.message}"
        else:
            session.add(CandidateFile(candidate_id=candidate.id, filename=filename, content_type=content_type,
                                      size=len(data), data=data, created_at=now))
            detail += f"; resume {filename} kept"
    return Outcome(201 if created else 200, "created" if created else "duplicate", detail[:500], candidate)


def log(session: Session, integration: Integration, outcome: str, detail: str, now: datetime,
        body: bytes | None = None, event_id: str = "", candidate_id: int | None = None) -> None:
    """Write one line of the delivery log, with the body for a short time (BODY_KEPT).

    A large body (an Indeed post with its resume) is kept only when the post can be
    processed again from the log, i.e. it was verified and is waiting for a job mapping or
    a fix; otherwise only bodies up to LOGGED_BODY.
    """
    text = None
    if body is not None and (len(body) <= LOGGED_BODY or outcome in PROCESS_AGAIN):
        text = body.decode("utf-8", "replace")
    session.add(IntegrationDelivery(integration_id=integration.id, at=now, outcome=outcome, detail=detail[:500],
                                    event_id=event_id[:200] or None, candidate_id=candidate_id, body=text))


def process_again(session: Session, integration: Integration, delivery: IntegrationDelivery,
                  now: datetime, api: lever.Api) -> Outcome:
    """Handle a logged post again (its signature was checked when it came): for a job mapped since,
    an API key saved since, or Lever answering again.

    Its event id is the one it came with, so the applicant is added at most once, whether
    this is pressed twice or the sender's retry arrives too.
    """
    try:
        parsed = parse(integration, {}, (delivery.body or "").encode("utf-8"))
        parsed.event_id = delivery.event_id or parsed.event_id
        fill(session, integration, parsed, api)
    except Refused as err:
        return Outcome(err.status, err.outcome, err.detail)
    return handle(session, integration, parsed, now)


def forget_bodies(session: Session, now: datetime) -> int:
    """Clear delivery-log bodies older than BODY_KEPT (they hold personal data)."""
    return session.execute(update(IntegrationDelivery).where(
        IntegrationDelivery.at < now - BODY_KEPT, IntegrationDelivery.body.is_not(None))
        .values(body=None).execution_options(synchronize_session=False)).rowcount or 0


def preview(session: Session, integration: Integration, body: str) -> dict:
    """What a sample payload would create, without creating anything or checking a signature."""
    try:
        parsed = parse(integration, {}, body.encode("utf-8"))
    except Refused as err:
        return {"ok": False, "errors": [err.detail]}
    if parsed.ignore:
        return {"ok": True, "summary": f"Nothing would be created: {parsed.ignore}.", "errors": []}
    if parsed.problem:
        return {"ok": False, "errors": [parsed.problem + "."]}
    if parsed.lookup is not None:
        return {"ok": True, "errors": [], "summary": (
            f"Would read opportunity {parsed.lookup[0] or '(none)'} from Lever's API, then add its applicant to "
            f"the interview its posting maps to.")}
    if integration.kind == "completion":
        return {"ok": parsed.status in ("started", "completed"), "errors": [] if parsed.status in (
            "started", "completed") else ["status must be \"started\" or \"completed\""],
                "summary": f"Would mark the candidate with milo_ref {parsed.milo_ref!r} {parsed.status}."}
    agent = agent_for(session, integration, parsed.job)
    result = {"ok": False, "errors": [], "person": parsed.person, "job": parsed.job, "agent": agent,
              "event_id": parsed.event_id}
    if agent is None:
        result["errors"].append(f"No agent for job {parsed.job or '(none)'}: map it in the table below.")
        return result
    try:
        notes = usable_contact(session, agent, parsed.person)
        contact = clean(session, agent, parsed.person)
    except candidates.ContactErrors as err:
        result["errors"] += [f"{k}: {v}" for k, v in err.errors.items()]
        return result
    result["notes"] = notes
    if parsed.resume is not None:
        try:
            filename, _type, data = check_resume(parsed.resume)
            result["resume"] = f"{filename} ({len(data)} bytes) would be kept"
        except DomainError as err:
            result["resume"] = f"refused: {err.message}"
    existing = candidates.find_existing(session, agent.id, contact.email, contact.phone)
    result.update(ok=True, contact=contact, existing=existing, summary=(
        f"Would {'find the existing candidate' if existing else 'add'} {contact.name or contact.email or contact.phone}"
        f" to {agent.title}" + ("" if existing or not integration.invite else f" and queue the invite by {contact.channel}")
        + "."))
    return result
