"""The template editor: list, edit with live preview, A/B variants, history, test sends."""
from __future__ import annotations

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import select

from .. import audit
from ..candidates.services import normalise_phone, valid_email
from ..clock import now
from ..errors import DomainError
from ..extensions import db
from ..models import Template, TemplateVersion
from ..settings.services import get_settings
from ..transactions import end_transaction, reads_only
from . import bp, defaults, services
from .forms import TemplateForm, TestSendForm, VariantOptionsForm
from .templating import VARIABLES, TemplateProblem, sms_count

PREVIEW_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
               "frame-ancestors 'self'; sandbox")


def get_variant(kind: str, channel: str, variant: str) -> Template:
    """The one place that turns (kind, channel, variant) from a URL into a template, or 404."""
    if kind not in defaults.KINDS or channel not in defaults.CHANNELS:
        abort(404)
    services.ensure_default_templates(db.session)
    db.session.commit()
    template = db.session.scalar(select(Template).where(Template.kind == kind, Template.channel == channel,
                                                        Template.variant == variant))
    if template is None:
        abort(404)
    return template


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="template-preview")


def _preview(channel: str, subject: str | None, body: str) -> dict:
    """Render a draft for the sample candidate: what the preview panel shows, and the length warnings."""
    settings = get_settings(db.session)
    draft = TemplateVersion(subject=subject, body=body or "")
    context = services.sample_context(settings, current_user, now())
    # Rendering is bounded but may take up to its time limit: hold no transaction meanwhile.
    end_transaction(db.session)
    out = {"channel": channel, "error": None, "error_field": None,
           "warnings": services.warnings_for(channel, subject, body or "")}
    try:
        rendered = services.render(draft, channel, context,
                                   unsubscribe_url=services.public_url("/u/sample") if channel == "email" else None)
    except TemplateProblem as err:
        out.update(error=err.message, error_field=err.field)
        return out
    out["rendered"] = rendered
    if channel == "email":
        token = _serializer().dumps({"s": subject or "", "b": body or ""})
        out["frame_url"] = url_for("messaging.preview_frame", d=token)
    else:
        out["count"] = sms_count(rendered.text)
    return out


@bp.get("/templates")
def index():
    services.ensure_default_templates(db.session)
    db.session.commit()
    rows = db.session.scalars(select(Template).order_by(Template.kind, Template.channel, Template.variant)).all()
    grid: dict[tuple[str, str], list[Template]] = {}
    for t in rows:
        grid.setdefault((t.kind, t.channel), []).append(t)
    return render_template("messaging/index.html", grid=grid, kinds=defaults.KINDS, channels=defaults.CHANNELS,
                           kind_labels=defaults.KIND_LABELS, channel_labels=defaults.CHANNEL_LABELS)


def _editor(template: Template, form: TemplateForm, status: int = 200, preview: dict | None = None):
    version = services.current_version(db.session, template)
    siblings = services.variants(db.session, template.kind, template.channel)
    history = db.session.scalars(select(TemplateVersion).where(TemplateVersion.template_id == template.id)
                                 .order_by(TemplateVersion.number.desc()).limit(20)).all()
    test_form = TestSendForm(formdata=None, to=current_user.email if template.channel == "email" else "")
    options = VariantOptionsForm(formdata=None, weight=template.weight, active=template.active)
    return render_template(
        "messaging/edit.html", t=template, version=version, form=form, siblings=siblings, history=history,
        preview=preview or _preview(template.channel, form.subject.data, form.body.data), variables=VARIABLES,
        kind_label=defaults.KIND_LABELS[template.kind], channel_label=defaults.CHANNEL_LABELS[template.channel],
        test_form=test_form, options=options, max_variants=services.MAX_VARIANTS,
    ), status


@bp.route("/templates/<kind>/<channel>/<string(length=1):variant>", methods=["GET", "POST"])
def edit(kind: str, channel: str, variant: str):
    template = get_variant(kind, channel, variant)
    version = services.current_version(db.session, template)
    form = TemplateForm(obj=version) if request.method == "GET" else TemplateForm()
    if form.validate_on_submit():
        settings = get_settings(db.session)
        try:
            saved = services.save_version(db.session, template, form.subject.data, form.body.data, current_user,
                                          services.sample_context(settings, current_user, now()))
        except TemplateProblem as err:
            db.session.rollback()
            getattr(form, err.field).errors = list(getattr(form, err.field).errors) + [err.message]
            return _editor(template, form, 422)
        audit.record(db.session, current_user, "template_saved",
                     f"{kind} {channel} variant {template.variant}: version {saved.number}", address=request.remote_addr)
        db.session.commit()
        flash(f"Saved as version {saved.number} of variant {template.variant}.", "success")
        return redirect(url_for("messaging.edit", kind=kind, channel=channel, variant=variant))
    return _editor(template, form, 422 if form.errors else 200)


@bp.get("/templates/<kind>/<channel>")
def edit_default(kind: str, channel: str):
    get_variant(kind, channel, "A")
    return redirect(url_for("messaging.edit", kind=kind, channel=channel, variant="A"))


@bp.post("/templates/<kind>/<channel>/<string(length=1):variant>/preview")
@reads_only
def preview(kind: str, channel: str, variant: str):
    template = get_variant(kind, channel, variant)
    data = _preview(template.channel, request.form.get("subject"), request.form.get("body", ""))
    # The warnings next to the fields are swapped in out of band; a refused template is a 422
    # (htmx is configured to swap 422 responses, so the message shows in the panel).
    return render_template("messaging/_preview.html", preview=data, oob=True), 422 if data["error"] else 200


@bp.get("/templates/preview-frame")
def preview_frame():
    """The e-mail preview as its own document, shown in a sandboxed frame."""
    try:
        draft = _serializer().loads(request.args.get("d", ""))
    except BadSignature:
        abort(404)
    settings = get_settings(db.session)
    context = services.sample_context(settings, current_user, now())
    db.session.commit()  # no database lock held while rendering (see _preview)
    try:
        rendered = services.render(TemplateVersion(subject=draft["s"], body=draft["b"]), "email", context,
                                   unsubscribe_url=services.public_url("/u/sample"))
    except TemplateProblem as err:
        return err.message, 422, {"Content-Type": "text/plain; charset=utf-8"}
    response = current_app.response_class(rendered.html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = PREVIEW_CSP
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


@bp.post("/templates/<kind>/<channel>/variants")
def add_variant(kind: str, channel: str):
    get_variant(kind, channel, "A")
    try:
        template = services.add_variant(db.session, kind, channel)
    except DomainError as err:
        db.session.rollback()
        flash(err.message, "error")
        return redirect(url_for("messaging.edit", kind=kind, channel=channel, variant="A"))
    audit.record(db.session, current_user, "template_variant", f"{kind} {channel}: variant {template.variant} added",
                 address=request.remote_addr)
    db.session.commit()
    flash(f"Variant {template.variant} added as a copy of variant A: change it and save.", "success")
    return redirect(url_for("messaging.edit", kind=kind, channel=channel, variant=template.variant))


@bp.post("/templates/<kind>/<channel>/<string(length=1):variant>/options")
def variant_options(kind: str, channel: str, variant: str):
    template = get_variant(kind, channel, variant)
    form = VariantOptionsForm()
    if not form.validate_on_submit():
        flash("Use a weight from 0 to 100.", "error")
    else:
        try:
            services.set_variant_options(db.session, template, form.weight.data, form.active.data)
        except DomainError as err:
            db.session.rollback()
            flash(err.message, "error")
        else:
            audit.record(db.session, current_user, "template_variant",
                         f"{kind} {channel} variant {variant}: weight {template.weight}, "
                         f"{'in use' if template.active else 'not in use'}", address=request.remote_addr)
            db.session.commit()
            flash(f"Variant {variant}: weight {template.weight}, {'in use' if template.active else 'not in use'}.",
                  "success")
    return redirect(url_for("messaging.edit", kind=kind, channel=channel, variant=variant))


@bp.post("/templates/<kind>/<channel>/<string(length=1):variant>/restore/<int:version_id>")
def restore(kind: str, channel: str, variant: str, version_id: int):
    template = get_variant(kind, channel, variant)
    old = db.session.get(TemplateVersion, version_id)
    if old is None or old.template_id != template.id:
        abort(404)
    settings = get_settings(db.session)
    try:
        saved = services.restore_version(db.session, template, old, current_user,
                                         services.sample_context(settings, current_user, now()))
    except TemplateProblem as err:
        db.session.rollback()
        flash(f"Version {old.number} cannot be restored: {err.message}", "error")
    else:
        audit.record(db.session, current_user, "template_restored",
                     f"{kind} {channel} variant {variant}: version {old.number} restored as {saved.number}",
                     address=request.remote_addr)
        db.session.commit()
        flash(f"Version {old.number} restored as version {saved.number}.", "success")
    return redirect(url_for("messaging.edit", kind=kind, channel=channel, variant=variant))


@bp.post("/templates/<kind>/<channel>/<string(length=1):variant>/test")
def send_test(kind: str, channel: str, variant: str):
    template = get_variant(kind, channel, variant)
    form = TestSendForm()
    settings = get_settings(db.session)
    if not form.validate_on_submit():
        flash("Enter where the test should go.", "error")
        return redirect(url_for("messaging.edit", kind=kind, channel=channel, variant=variant))
    try:
        to = valid_email(form.to.data) if channel == "email" else normalise_phone(
            form.to.data, settings.default_country)[0]
    except DomainError as err:
        flash(f"Test not sent: {err.message}", "error")
        return redirect(url_for("messaging.edit", kind=kind, channel=channel, variant=variant))
    result = services.send_test(db.session, channel, services.current_version(db.session, template), settings, current_user,
                                to, now())
    if result.ok:
        flash(f"Test sent to {to}.", "success")
    else:
        flash(f"Test not sent: {result.error}", "error")
    return redirect(url_for("messaging.edit", kind=kind, channel=channel, variant=variant))
