"""The Settings page: messaging identity, channel states with test sends."""
from __future__ import annotations

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from .. import audit
from ..candidates.services import normalise_phone, valid_email
from ..clock import now
from ..errors import DomainError
from ..extensions import db
from ..messaging import channels
from ..messaging import services as messaging
from ..ops.settings import settings_context
from ..transactions import end_transaction
from . import bp, checks
from ..forms_common import rules_from_form, rules_into_form
from .forms import MessagingForm, TimingForm
from .services import get_settings, settings_for_update


def _checklist(refresh: bool = False) -> list[checks.Check]:
    """The set-up checklist; the mail server probe runs with no transaction open."""
    settings = get_settings(db.session)
    texts = checks.text_channels_in_use(db.session)
    end_transaction(db.session)
    cfg = current_app.config
    return checks.checklist(settings, cfg, checks.smtp_problem(cfg, refresh), texts, channels.twilio_configured())


def channel_states(found: list[checks.Check]) -> list[dict]:
    """Each channel: configured only when a test send would work, and its last error."""
    cfg = current_app.config
    by_key = {c.key: c for c in found}
    email_ok = by_key["sender"].ok and by_key["smtp"].ok
    states = [
        {"channel": "email", "label": "E-mail", "configured": email_ok,
         "how": f"SMTP {cfg.get('MAIL_SERVER')}:{cfg.get('MAIL_PORT')}"
                + (" (TLS)" if cfg.get("MAIL_USE_TLS") else " (SSL)" if cfg.get("MAIL_USE_SSL") else "")
                + ("" if email_ok else " — " + (by_key["sender"].detail if not by_key["sender"].ok
                                                 else by_key["smtp"].detail))},
    ]
    twilio = cfg["MILO_SMS_BACKEND"] == "twilio" and channels.twilio_configured()
    for channel, label in (("sms", "SMS"), ("whatsapp", "WhatsApp")):
        if cfg["MILO_SMS_BACKEND"] == "console":
            how, ok = "console: messages are written to the log, not sent (MILO_SMS_BACKEND=twilio sends them)", False
        else:
            ok = twilio and (channel == "sms" or bool(cfg.get("TWILIO_WHATSAPP_FROM") or cfg.get("TWILIO_FROM_NUMBER")))
            how = "Twilio" if ok else "Twilio: set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and a sender"
        states.append({"channel": channel, "label": label, "configured": ok, "how": how})
    for state in states:
        failed = messaging.last_error(db.session, state["channel"])
        state["last_error"] = failed.last_error if failed else None
        state["last_error_at"] = (failed.sent_at or failed.scheduled_for) if failed else None
    return states


@bp.get("/settings/checklist")
def checklist():
    """The set-up checklist as a fragment (the agents page loads it; empty once all is done)."""
    found = _checklist(refresh=request.args.get("refresh") == "1")
    compact = request.args.get("compact") == "1"
    if compact and all(c.ok for c in found):
        return ""
    return render_template("settings/_checklist.html", checks=found, compact=compact)


def _timing_form(settings, formdata=None) -> TimingForm:
    form = TimingForm(formdata=formdata, prefix="t")
    if formdata is None:
        rules_into_form(form, settings)
        for name in ("nudge_lead_hours", "followup_cap", "min_spacing_auto_hours", "min_spacing_manual_hours"):
            getattr(form, name).data = getattr(settings, name)
        form.final_nudge_lead_hours.data = settings.final_nudge_lead_hours or 0
    return form


def _page(form: MessagingForm, timing: TimingForm, status: int = 200, **operations):
    found = _checklist(refresh=request.args.get("refresh") == "1")
    return render_template("settings/index.html", form=form, timing=timing, checks=found,
                           states=channel_states(found), **(operations or settings_context(db.session))), status


def page_with(status: int, **operations):
    """The Settings page with the operations sections' forms given (e.g. with their errors)."""
    settings = get_settings(db.session)
    return _page(MessagingForm(formdata=None, obj=settings), _timing_form(settings), status, **operations)


@bp.route("/settings", methods=["GET", "POST"])
def index():
    """Messaging identity (this form), with the rules form and the channels shown beside it."""
    settings = settings_for_update(db.session) if request.method == "POST" else get_settings(db.session)
    form = MessagingForm(obj=settings)
    if form.validate_on_submit():
        before = audit.services.snapshot(settings, [name for name in form.data if name != "csrf_token"])
        form.populate_obj(settings)
        if changed := audit.services.describe_changes(before, settings):
            audit.record(db.session, current_user, "settings_changed", "Messaging: " + changed, address=request.remote_addr)
        db.session.commit()
        flash("Settings saved.", "success")
        return redirect(url_for("settings.index"))
    return _page(form, _timing_form(settings), 422 if form.errors else 200)


@bp.post("/settings/rules")
def rules():
    """The team's follow-up rules (each interview agent may override them)."""
    settings = settings_for_update(db.session)
    timing = _timing_form(settings, request.form)
    if timing.validate_on_submit():
        values = rules_from_form(timing)
        before = audit.services.snapshot(settings, [*values, "min_spacing_auto_hours", "min_spacing_manual_hours"])
        for name, value in values.items():
            setattr(settings, name, value)
        settings.min_spacing_auto_hours = timing.min_spacing_auto_hours.data
        settings.min_spacing_manual_hours = timing.min_spacing_manual_hours.data
        if changed := audit.services.describe_changes(before, settings):
            audit.record(db.session, current_user, "settings_changed", "Follow-up rules: " + changed,
                         address=request.remote_addr)
        db.session.commit()
        flash("Follow-up rules saved. They apply from the next tick.", "success")
        return redirect(url_for("settings.index", _anchor="followups"))
    return _page(MessagingForm(formdata=None, obj=settings), timing, 422)


@bp.post("/settings/test/<channel>")
def test_channel(channel: str):
    """Send a short test through one channel to the recruiter, and say what happened."""
    settings = get_settings(db.session)
    if channel not in ("email", "sms", "whatsapp"):
        return redirect(url_for("settings.index"))
    to = (request.form.get("to") or "").strip()
    try:
        to = valid_email(to or current_user.email) if channel == "email" else normalise_phone(
            to, settings.default_country)[0]
    except DomainError as err:
        flash(f"Test not sent: {err.message}", "error")
        return redirect(url_for("settings.index"))
    version = messaging.choose_version(db.session, "invite", channel)
    result = messaging.send_test(db.session, channel, version, settings, current_user, to, now())
    flash(f"Test sent to {to}." if result.ok else f"Test not sent: {result.error}", "success" if result.ok else "error")
    return redirect(url_for("settings.index"))

