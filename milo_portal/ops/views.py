"""Settings → Retention and Backups, and /ops/metrics (Prometheus)."""
from __future__ import annotations

import hmac

from flask import Response, abort, current_app, flash, redirect, request, url_for
from flask_login import current_user

from .. import audit
from ..extensions import db
from ..clock import now
from . import bp, health, metrics
from .forms import BackupForm, RetentionForm
from ..settings.views import page_with
from .settings import ops_settings_for_update, settings_context


def _settings_page(status: int, **forms):
    return page_with(status, **settings_context(db.session, **forms))


def _changes(row, form, names) -> list[str]:
    return [f"{name} {getattr(row, name)} → {getattr(form, name).data}" for name in names
            if getattr(row, name) != getattr(form, name).data]


@bp.post("/settings/retention")
def retention():
    """Save how long personal data and audit entries are kept."""
    form = RetentionForm(prefix="r")
    if not form.validate_on_submit():
        return _settings_page(422, retention_form=form)
    row = ops_settings_for_update(db.session)
    changed = _changes(row, form, ("retention_days", "audit_retention_days"))
    form.populate_obj(row)
    if changed:
        audit.record(db.session, current_user, "settings_changed", "Retention: " + "; ".join(changed),
                     address=request.remote_addr)
    db.session.commit()
    flash("Retention saved. The daily job applies it.", "success")
    return redirect(url_for("settings.index", _anchor="retention"))


@bp.post("/settings/backups")
def backups():
    """Turn the nightly backup on or off, and set its hour and how many are kept."""
    form = BackupForm(prefix="b")
    if not form.validate_on_submit():
        return _settings_page(422, backup_form=form)
    row = ops_settings_for_update(db.session)
    changed = _changes(row, form, ("backup_enabled", "backup_hour", "backup_keep"))
    form.populate_obj(row)
    if changed:
        audit.record(db.session, current_user, "settings_changed", "Backups: " + "; ".join(changed),
                     address=request.remote_addr)
    db.session.commit()
    flash(f"Nightly backups {'on: the first runs within a minute' if row.backup_enabled else 'off'}.", "success")
    return redirect(url_for("settings.index", _anchor="backups"))


def _scraper_allowed() -> bool:
    if current_user.is_authenticated:
        return True
    token = current_app.config["MILO_METRICS_TOKEN"]
    given = request.headers.get("Authorization", "")
    return bool(token) and given.startswith("Bearer ") and hmac.compare_digest(
        given[len("Bearer "):].strip().encode(), token.encode())


@bp.get("/ops/metrics")
def prometheus():
    """Prometheus text: for a logged-in teammate, or a scraper with MILO_METRICS_TOKEN."""
    if not _scraper_allowed():
        abort(401)
    cfg = current_app.config
    found = health.check(db.session, now(), cfg["MILO_HEALTH_MAX_TICK_AGE"], cfg["MILO_SCHEDULER"])
    return Response(metrics.render(found), content_type="text/plain; version=0.0.4; charset=utf-8")
