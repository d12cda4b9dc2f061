"""Integration pages: inbound webhooks with their delivery log, job mapping and sample tester;
outbound event URLs with their delivery log; the e-mail automation recipe; API keys."""
from __future__ import annotations

from flask import Response, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from .. import audit
from ..api import services as api_keys
from ..auth import sessions
from ..clock import now
from ..errors import DomainError
from ..extensions import db
from ..messaging.services import public_url
from ..models import (INTEGRATION_KINDS, Agent, ApiKey, CandidateFile, Integration, IntegrationDelivery,
                      WebhookDelivery, WebhookEndpoint)
from ..settings.services import get_settings
from ..transactions import end_transaction, reads_only
from . import bp, inbound, lever, outbound, services

FOCUS = {"api": ("generic", "completion"), "ats": ("greenhouse", "workable", "lever"), "indeed": ("indeed",)}


def _agents():
    return db.session.scalars(select(Agent).where(Agent.archived_at.is_(None)).order_by(Agent.title)).all()


@bp.app_context_processor
def _helpers():
    def candidate_files(candidate_id: int):
        """Files that came with a candidate (Indeed resumes), for the candidate page."""
        return db.session.scalars(select(CandidateFile).where(CandidateFile.candidate_id == candidate_id)
                                  .order_by(CandidateFile.id)).all()
    return {"candidate_files": candidate_files}


@bp.get("/integrations")
def index():
    """Every integration, the outbound URLs and the recipe for any other ATS."""
    focus = request.args.get("focus", "")
    kinds = FOCUS.get(focus, INTEGRATION_KINDS)
    integrations = db.session.scalars(select(Integration).order_by(Integration.id)).all()
    endpoints = db.session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id)).all()
    agents = _agents()
    settings = get_settings(db.session)
    agent = db.session.get(Agent, request.args.get("recipe_agent", type=int) or 0) or (agents[0] if agents else None)
    ats = request.args.get("ats", "icims")
    recipe = services.recipe(agent, ats, public_url(f"/s/{agent.share_token}"), settings.company_name) if agent else None
    return render_template("integrations/index.html", integrations=integrations, endpoints=endpoints, agents=agents,
                           kinds=kinds, all_kinds=INTEGRATION_KINDS, labels=inbound.KIND_LABELS, focus=focus,
                           recipe=recipe, recipe_agent=agent, ats=ats, ats_choices=services.RECIPE_ATS,
                           allow_private_label=services.ALLOW_PRIVATE_LABEL)


def _detail(integration: Integration, new_secret: str | None = None, sample=None, sample_body: str = "",
            errors: dict | None = None, status: int = 200):
    deliveries = db.session.scalars(select(IntegrationDelivery).where(
        IntegrationDelivery.integration_id == integration.id).order_by(IntegrationDelivery.at.desc(),
                                                                       IntegrationDelivery.id.desc()).limit(50)).all()
    return render_template(
        "integrations/detail.html", integration=integration, label=inbound.KIND_LABELS[integration.kind],
        url=public_url(f"/hooks/{integration.kind}/{integration.token}"), deliveries=deliveries, agents=_agents(),
        process_again=inbound.PROCESS_AGAIN,
        mapping=inbound.field_map(integration), mappable=inbound.MAPPABLE, new_secret=new_secret, sample=sample,
        sample_body=sample_body, errors=errors or {}, now=now()), status, _no_store(new_secret)


@bp.post("/integrations/new")
def create():
    """Add an integration; its secret is shown on the page the redirect leads to, once."""
    try:
        integration, secret = services.create_integration(db.session, request.form.get("kind", ""),
                                                           request.form.get("name", ""), now())
    except DomainError as err:
        db.session.rollback()
        flash(err.message, "error")
        return redirect(url_for("integrations.index"))
    db.session.flush()
    audit.record(db.session, current_user, "webhook_secret",
                 f"integration {integration.id} ({integration.kind}, {integration.name}) created with a new secret",
                 address=request.remote_addr)
    _show_once(f"integration:{integration.id}", secret)
    db.session.commit()
    return redirect(url_for("integrations.detail", integration_id=integration.id), 303)


def _no_store(secret: str | None) -> dict:
    """A page showing a secret is kept by no cache (Back shows it again only from the server: not at all)."""
    return {"Cache-Control": "no-store"} if secret else {}


def _show_once(what: str, secret: str) -> None:
    """Keep a new secret for the page the redirect leads to (a reload of that page posts nothing)."""
    sessions.keep_shown_once(db.session, current_user.login_session_id, what, secret)


def _shown_once(what: str) -> str | None:
    """The secret kept for this page by this login, if any: shown on the first GET only."""
    return sessions.take_shown_once(db.session, current_user.login_session_id, what)


@bp.get("/integrations/<int:integration_id>")
def detail(integration_id: int):
    """One integration: its URL, settings, job table, sample tester and delivery log (a new secret once)."""
    integration = services.get_integration(db.session, integration_id)
    return _detail(integration, new_secret=_shown_once(f"integration:{integration.id}"))


@bp.post("/integrations/<int:integration_id>/settings")
def save_settings(integration_id: int):
    """Save the default agent, switches and field mapping."""
    integration = services.get_integration(db.session, integration_id)
    try:
        services.update_settings(db.session, integration, request.form)
    except DomainError as err:
        db.session.rollback()
        return _detail(services.get_integration(db.session, integration_id), errors={err.field: err.message},
                       status=422)
    db.session.commit()
    flash("Saved.", "success")
    return redirect(url_for("integrations.detail", integration_id=integration_id))


@bp.post("/integrations/<int:integration_id>/rotate")
def rotate(integration_id: int):
    """A new secret (or a pasted one); the old one keeps working for 24 hours."""
    integration = services.get_integration(db.session, integration_id)
    try:
        secret = services.set_secret(integration, request.form.get("secret"), now())
    except DomainError as err:
        db.session.rollback()
        return _detail(services.get_integration(db.session, integration_id), errors={err.field: err.message},
                       status=422)
    audit.record(db.session, current_user, "webhook_secret",
                 f"integration {integration.id} ({integration.kind}, {integration.name}): secret rotated",
                 address=request.remote_addr)
    _show_once(f"integration:{integration.id}", secret)
    db.session.commit()
    return redirect(url_for("integrations.detail", integration_id=integration_id), 303)


@bp.post("/integrations/<int:integration_id>/api-key")
def save_api_key(integration_id: int):
    """Save (or replace) the Lever API key; the page never shows it again."""
    integration = services.get_integration(db.session, integration_id)
    try:
        services.set_api_key(integration, request.form.get("api_key"))
    except DomainError as err:
        db.session.rollback()
        return _detail(services.get_integration(db.session, integration_id), errors={err.field: err.message},
                       status=422)
    audit.record(db.session, current_user, "webhook_secret",
                 f"integration {integration.id} ({integration.kind}, {integration.name}): API key saved",
                 address=request.remote_addr)
    db.session.commit()
    flash("The API key is saved. Applicants are read from Lever from now on.", "success")
    return redirect(url_for("integrations.detail", integration_id=integration_id) + "#lever-key", 303)


@bp.post("/integrations/<int:integration_id>/api-key/delete")
def remove_api_key(integration_id: int):
    """Forget the Lever API key: posts are read by the field mapping again."""
    integration = services.get_integration(db.session, integration_id)
    if integration.api_key:
        integration.api_key = None
        audit.record(db.session, current_user, "webhook_secret",
                     f"integration {integration.id} ({integration.kind}, {integration.name}): API key removed",
                     address=request.remote_addr)
    db.session.commit()
    flash("The API key is removed.", "success")
    return redirect(url_for("integrations.detail", integration_id=integration_id) + "#lever-key", 303)


@bp.post("/integrations/<int:integration_id>/jobs")
def map_job(integration_id: int):
    """Map an external job to an agent."""
    integration = services.get_integration(db.session, integration_id)
    try:
        services.map_job(db.session, integration, request.form.get("external_job", ""), request.form.get("agent_id"))
    except DomainError as err:
        db.session.rollback()
        return _detail(services.get_integration(db.session, integration_id), errors={err.field: err.message},
                       status=422)
    db.session.commit()
    return redirect(url_for("integrations.detail", integration_id=integration_id) + "#jobs")


@bp.post("/integrations/<int:integration_id>/jobs/<int:job_id>/delete")
def unmap_job(integration_id: int, job_id: int):
    """Remove a job mapping: its applicants are logged as "no agent" again."""
    integration = services.get_integration(db.session, integration_id)
    for job in list(integration.jobs):
        if job.id == job_id:
            integration.jobs.remove(job)
    db.session.commit()
    return redirect(url_for("integrations.detail", integration_id=integration_id) + "#jobs")


@bp.post("/integrations/<int:integration_id>/deliveries/<int:delivery_id>/process")
def process_again(integration_id: int, delivery_id: int):
    """Handle a logged post again (a job mapped since, a fix made): adds the applicant at most once."""
    integration = services.get_integration(db.session, integration_id)
    delivery = db.session.get(IntegrationDelivery, delivery_id)
    if (delivery is None or delivery.integration_id != integration.id or delivery.outcome not in inbound.PROCESS_AGAIN
            or not delivery.body):
        abort(404)
    moment = now()
    outcome = inbound.process_again(db.session, integration, delivery, moment, lever.Api.from_config(current_app.config))
    if outcome.status >= 400:
        db.session.rollback()  # nothing half-made stays; the log line below is the one write
        integration = services.get_integration(db.session, integration_id)
    done = outcome.candidate is not None and outcome.status < 400
    inbound.log(db.session, integration, outcome.outcome, f"processed again: {outcome.detail}", moment,
                event_id=delivery.event_id or "", candidate_id=outcome.candidate.id if done else None)
    db.session.commit()
    flash(outcome.detail[:1].upper() + outcome.detail[1:] + ".", "success" if outcome.status < 400 else "error")
    return redirect(url_for("integrations.detail", integration_id=integration_id) + "#log")


@bp.post("/integrations/<int:integration_id>/sample")
@reads_only
def sample(integration_id: int):
    """Show what a pasted payload would create, creating nothing."""
    integration = services.get_integration(db.session, integration_id)
    body = request.form.get("body", "")
    return _detail(integration, sample=inbound.preview(db.session, integration, body), sample_body=body)


# --- outbound -----------------------------------------------------------------------------

@bp.post("/integrations/endpoints/new")
def create_endpoint():
    """Add a URL that receives candidate events; its signing secret is shown once."""
    try:
        endpoint, secret = services.create_endpoint(db.session, request.form.get("url", ""),
                                                    request.form.get("agent_id"),
                                                    request.form.get("allow_private") == "y", now())
    except DomainError as err:
        db.session.rollback()
        flash(f"{err.message}", "error")
        return redirect(url_for("integrations.index") + "#outbound")
    db.session.flush()
    audit.record(db.session, current_user, "webhook_secret", f"outbound endpoint {endpoint.id} created with a new secret",
                 address=request.remote_addr)
    _show_once(f"endpoint:{endpoint.id}", secret)
    db.session.commit()
    return redirect(url_for("integrations.endpoint", endpoint_id=endpoint.id), 303)


def _endpoint_page(endpoint: WebhookEndpoint, new_secret: str | None = None, test=None, status: int = 200):
    deliveries = db.session.scalars(select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
                                    .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
                                    .limit(100)).all()
    return render_template("integrations/endpoint.html", endpoint=endpoint, deliveries=deliveries,
                           new_secret=new_secret, test=test), status, _no_store(new_secret)


@bp.get("/integrations/endpoints/<int:endpoint_id>")
def endpoint(endpoint_id: int):
    """One outbound URL and its delivery log (its new secret once)."""
    found = services.get_endpoint(db.session, endpoint_id)
    return _endpoint_page(found, new_secret=_shown_once(f"endpoint:{found.id}"))


@bp.post("/integrations/endpoints/<int:endpoint_id>/toggle")
def toggle_endpoint(endpoint_id: int):
    """Switch an outbound URL off or on."""
    found = services.get_endpoint(db.session, endpoint_id)
    found.active = not found.active
    db.session.commit()
    return redirect(url_for("integrations.endpoint", endpoint_id=endpoint_id))


@bp.post("/integrations/endpoints/<int:endpoint_id>/test")
def test_endpoint(endpoint_id: int):
    """Send a ping event now and show the answer (no transaction open meanwhile)."""
    found = services.get_endpoint(db.session, endpoint_id)
    end_transaction(db.session)
    result = outbound.test_event(found, now())
    return _endpoint_page(found, test=result)


@bp.post("/integrations/deliveries/<int:delivery_id>/resend")
def resend(delivery_id: int):
    """Queue an event again for its URL."""
    delivery = services.get_delivery(db.session, delivery_id)
    try:
        outbound.resend(db.session, delivery, now())
    except DomainError as err:
        db.session.rollback()
        flash(err.message, "error")
    else:
        db.session.commit()
        flash("Queued again: it goes with the next tick.", "success")
    return redirect(url_for("integrations.endpoint", endpoint_id=delivery.endpoint_id))


@bp.get("/candidates/<int:candidate_id>/files/<int:file_id>")
def download_file(candidate_id: int, file_id: int):
    """A candidate's file, always as a download (never rendered in the browser)."""
    found = services.get_file(db.session, candidate_id, file_id)
    safe = "".join(ch for ch in found.filename if ch.isalnum() or ch in "._- ")[:100] or "file"
    return Response(found.data, mimetype=found.content_type, headers={
        "Content-Disposition": f'attachment; filename="{safe}"', "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox; default-src 'none'"})


# --- API keys -----------------------------------------------------------------------------

def _keys_page(new_key: str | None = None, error: str | None = None, status: int = 200):
    keys = db.session.scalars(select(ApiKey).order_by(ApiKey.revoked_at.is_not(None), ApiKey.id.desc())).all()
    return render_template("integrations/api_keys.html", keys=keys, new_key=new_key, error=error,
                           docs_url=public_url("/api/v1/openapi.json")), status, _no_store(new_key)


@bp.get("/settings/api-keys")
def api_keys_page():
    """API keys: create, revoke, last used (a new key once)."""
    return _keys_page(new_key=_shown_once("api_keys"))


@bp.post("/settings/api-keys/new")
def create_api_key():
    """Create a key; the secret is on the page that follows, once."""
    try:
        key, raw = api_keys.create_key(db.session, request.form.get("name", ""), now(), current_user.id)
    except DomainError as err:
        db.session.rollback()
        return _keys_page(error=err.message, status=422)
    db.session.flush()
    audit.record(db.session, current_user, "api_key", f"key {key.prefix} ({key.name}) created",
                 address=request.remote_addr)
    _show_once("api_keys", raw)
    db.session.commit()
    return redirect(url_for("integrations.api_keys_page"), 303)


@bp.post("/settings/api-keys/<int:key_id>/revoke")
def revoke_api_key(key_id: int):
    """Revoke a key at once."""
    key = db.session.get(ApiKey, key_id)
    if key is None:
        return _keys_page(error="There is no such key.", status=404)
    api_keys.revoke_key(key, now())
    audit.record(db.session, current_user, "api_key", f"key {key.prefix} ({key.name}) revoked",
                 address=request.remote_addr)
    db.session.commit()
    flash(f"Key {key.name} is revoked.", "success")
    return redirect(url_for("integrations.api_keys_page"))
