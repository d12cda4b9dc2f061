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
from .forms import MessagingForm
from .services import get_settings


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


@bp.route("/settings", methods=["GET", "POST"])
def index():
    settings = get_settings(db.session)
    form = MessagingForm(obj=settings)
    if form.validate_on_submit():
        form.populate_obj(settings)
        db.session.commit()
        flash("Settings saved.", "success")
        return redirect(url_for("settings.index"))
    db.session.commit()  # the settings row, if it was just made
    return render_template("settings/index.html", form=form, states=channel_states()), (422 if form.errors else 200)


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
    db.session.commit()
    result = messaging.send_test(channel, version, settings, current_user, to, now())
    flash(f"Test sent to {to}." if result.ok else f"Test not sent: {result.error}", "success" if result.ok else "error")
    return redirect(url_for("settings.index"))

