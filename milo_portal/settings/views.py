"""The Settings page: messaging identity, channel states with test sends."""
from __future__ import annotations

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from ..candidates.services import normalise_email, normalise_phone
from ..clock import now
from ..errors import DomainError
from ..extensions import db
from ..messaging import channels
from ..messaging import services as messaging
from . import bp
from ..forms_common import clock, parse_clock
from .forms import MessagingForm, TimingForm
from .services import get_settings, settings_for_update


def channel_states() -> list[dict]:
    """Whether each channel is configured (from the environment) and its last error."""
    cfg = current_app.config
    sms_backend = cfg["MILO_SMS_BACKEND"]
    twilio_ok = channels.twilio_configured()
    states = [
        {"channel": "email", "label": "E-mail",
         "configured": bool(cfg.get("MAIL_SERVER")),
         "how": f"SMTP {cfg.get('MAIL_SERVER')}:{cfg.get('MAIL_PORT')}"
                + (" (TLS)" if cfg.get("MAIL_USE_TLS") else " (SSL)" if cfg.get("MAIL_USE_SSL") else "")},
    ]
    for channel, label in (("sms", "SMS"), ("whatsapp", "WhatsApp")):
        if sms_backend == "console":
            how, ok = "console: messages are written to the log, not sent", True
        else:
            ok = twilio_ok and (channel == "sms" or bool(cfg.get("TWILIO_WHATSAPP_FROM") or cfg.get("TWILIO_FROM_NUMBER")))
            how = "Twilio" if ok else "Twilio: set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and a sender"
        states.append({"channel": channel, "label": label, "configured": ok, "how": how})
    for state in states:
        failed = messaging.last_error(db.session, state["channel"])
        state["last_error"] = failed.last_error if failed else None
        state["last_error_at"] = (failed.sent_at or failed.scheduled_for) if failed else None
    return states


def _timing_form(settings, formdata=None) -> TimingForm:
    form = TimingForm(formdata=formdata, prefix="t")
    if formdata is None:
        form.window_start.data = clock(settings.window_start_minute)
        form.window_end.data = clock(settings.window_end_minute)
        form.send_days.data = [d for d in settings.send_days.split(",") if d]
        form.initial_send_days.data = [d for d in settings.initial_send_days.split(",") if d]
        form.reminder_offsets_hours.data = ", ".join(p for p in settings.reminder_offsets_hours.split(",") if p)
        for name in ("nudge_lead_hours", "followup_cap", "min_spacing_auto_hours", "min_spacing_manual_hours"):
            getattr(form, name).data = getattr(settings, name)
        form.final_nudge_lead_hours.data = settings.final_nudge_lead_hours or 0
    return form


@bp.route("/settings", methods=["GET", "POST"])
def index():
    settings = settings_for_update(db.session) if request.method == "POST" else get_settings(db.session)
    form = MessagingForm(obj=settings) if "t-window_start" not in request.form else MessagingForm(formdata=None, obj=settings)
    timing = _timing_form(settings, request.form if "t-window_start" in request.form else None)
    if "t-window_start" in request.form:
        if timing.validate_on_submit():
            settings.window_start_minute = parse_clock(timing.window_start.data)
            settings.window_end_minute = parse_clock(timing.window_end.data)
            settings.send_days = ",".join(sorted(timing.send_days.data))
            settings.initial_send_days = ",".join(sorted(timing.initial_send_days.data))
            settings.reminder_offsets_hours = ",".join(
                str(h) for h in sorted({int(p) for p in (timing.reminder_offsets_hours.data or "").split(",") if p.strip()}))
            for name in ("nudge_lead_hours", "final_nudge_lead_hours", "followup_cap", "min_spacing_auto_hours",
                         "min_spacing_manual_hours"):
                setattr(settings, name, getattr(timing, name).data)
            db.session.commit()
            flash("Follow-up rules saved. They apply from the next tick.", "success")
            return redirect(url_for("settings.index", _anchor="followups"))
    elif form.validate_on_submit():
        form.populate_obj(settings)
        db.session.commit()
        flash("Settings saved.", "success")
        return redirect(url_for("settings.index"))
    status = 422 if (form.errors or timing.errors) else 200
    return render_template("settings/index.html", form=form, timing=timing, states=channel_states()), status


@bp.post("/settings/test/<channel>")
def test_channel(channel: str):
    """Send a short test through one channel to the recruiter, and say what happened."""
    settings = get_settings(db.session)
    if channel not in ("email", "sms", "whatsapp"):
        return redirect(url_for("settings.index"))
    to = (request.form.get("to") or "").strip()
    try:
        to = normalise_email(to or current_user.email) if channel == "email" else normalise_phone(
            to, settings.default_country)[0]
    except DomainError as err:
        flash(f"Test not sent: {err.message}", "error")
        return redirect(url_for("settings.index"))
    version = messaging.choose_version(db.session, "invite", channel)
    result = messaging.send_test(db.session, channel, version, settings, current_user, to, now())
    flash(f"Test sent to {to}." if result.ok else f"Test not sent: {result.error}", "success" if result.ok else "error")
    return redirect(url_for("settings.index"))

