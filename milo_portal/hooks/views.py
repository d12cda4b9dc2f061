"""Twilio webhooks: delivery reports and inbound replies (STOP, START, HELP)."""
from __future__ import annotations

from flask import abort, current_app, request
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from ..clock import now
from ..extensions import csrf, db
from ..messaging.services import public_url, support_contact
from ..settings.services import get_settings
from . import bp, services

csrf.exempt(bp)


def _check_twilio_signature() -> None:
    """403 unless X-Twilio-Signature matches the URL Twilio called and the form it sent."""
    token = current_app.config.get("TWILIO_AUTH_TOKEN")
    signature = request.headers.get("X-Twilio-Signature", "")
    # Twilio signs the public URL it was given, not whatever Host reached us.
    url = public_url(request.full_path.rstrip("?"))
    if not token or not signature or not RequestValidator(token).validate(url, request.form.to_dict(), signature):
        abort(403)


def _twiml(text: str | None):
    response = MessagingResponse()
    if text:
        response.message(text)
    return str(response), 200, {"Content-Type": "text/xml; charset=utf-8"}


@bp.post("/twilio/status")
def twilio_status():
    _check_twilio_signature()
    sid = request.form.get("MessageSid", "")
    status = request.form.get("MessageStatus", "")
    moment = now()
    if sid and services.first_time(db.session, "twilio-status", f"{sid}:{status}", moment):
        services.delivery_report(db.session, sid, status, request.form.get("ErrorCode"), moment)
    db.session.commit()
    return "", 204


@bp.post("/twilio/inbound")
def twilio_inbound():
    _check_twilio_signature()
    sid = request.form.get("MessageSid", "")
    moment = now()
    if not sid or not services.first_time(db.session, "twilio-inbound", sid, moment):
        db.session.commit()
        return _twiml(None)
    channel, phone = services.parse_sender(request.form.get("From", ""))
    command = services.command_of(request.form.get("Body"))
    settings = get_settings(db.session)
    company = settings.company_name or "us"
    reply = None
    if command in ("stop", "start"):
        services.apply_command(db.session, command, channel, phone, moment)
        reply = (f"You will get no more messages from {company}. Reply START to receive them again."
                 if command == "stop" else f"You will receive messages from {company} again. Reply STOP to stop.")
    elif command == "help":
        reply = f"{company} recruiting. Help: {support_contact(settings, None)}. Reply STOP to opt out."
    db.session.commit()
    return _twiml(reply)


# --- integrations: ATS, Indeed, generic signed posts, external interview completion ------

@bp.post("/<kind>/<token>")
def integration(kind: str, token: str):
    """One configured integration's endpoint: signed by its scheme, answered in JSON."""
    from ..integrations import inbound, lever
    from ..models import INTEGRATION_KINDS, Integration

    if kind not in INTEGRATION_KINDS:
        abort(404)
    found = db.session.scalar(db.select(Integration).where(Integration.token == token[:64]))
    if found is None or found.kind != kind or not found.active:
        abort(404)
    moment = now()
    limit = inbound.MAX_BODY_WITH_RESUME if kind == "indeed" else inbound.MAX_BODY
    # The input guard has read the body already (within MAX_CONTENT_LENGTH); it is hashed raw.
    body = request.get_data(cache=True)
    try:
        if len(body) > limit:
            raise inbound.Refused(413, "rejected", f"Body larger than {limit // 1024} KiB: refused.")
        inbound.verify(found, request.headers, body, moment)
        parsed = inbound.parse(found, request.headers, body)
    except inbound.Refused as err:
        inbound.log(db.session, found, err.outcome, err.detail, moment, body if err.status != 413 else None)
        db.session.commit()
        return {"error": err.detail}, err.status
    try:
        # Lever's events carry ids only: the applicant is read from Lever's API, with no
        # transaction open (this one has written nothing yet).
        inbound.fill(db.session, found, parsed, lever.Api.from_config(current_app.config))
    except inbound.Refused as err:
        inbound.log(db.session, found, err.outcome, err.detail, moment, body, parsed.event_id)
        db.session.commit()
        return {"error": err.detail}, err.status
    outcome = inbound.handle(db.session, found, parsed, moment)
    if outcome.status >= 400:
        db.session.rollback()  # nothing half-made stays; the log line below is the one write
        found = db.session.get(Integration, found.id)
    inbound.log(db.session, found, outcome.outcome, outcome.detail, moment, body, parsed.event_id,
                outcome.candidate.id if outcome.candidate is not None and outcome.status < 400 else None)
    db.session.commit()
    answer = {"status": outcome.outcome, "detail": outcome.detail}
    if outcome.candidate is not None and outcome.status < 400:
        answer["candidate_id"] = outcome.candidate.id
    return answer, outcome.status
