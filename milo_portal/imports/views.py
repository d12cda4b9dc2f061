"""Bulk upload pages: the drop zone, the review, the batch page with its report and Undo."""
from __future__ import annotations

import logging
import re
from pathlib import Path

from flask import (Response, abort, current_app, flash, redirect, render_template, request, stream_with_context,
                   url_for)
from flask_login import current_user
from sqlalchemy import select
from werkzeug.exceptions import RequestEntityTooLarge

from .. import audit
from ..agents.access import get_agent
from ..candidates.services import CHANNEL_LABELS
from ..clock import now
from ..errors import DomainError
from ..extensions import db
from ..models import CHANNELS, Agent, ImportBatch
from ..request_input import int_arg
from ..transactions import end_transaction, reads_only
from . import bp, parsers, services

log = logging.getLogger(__name__)
MAP_FIELD = re.compile(r"^map-(\d{1,4})-(\d{1,4})$")


def get_batch(batch_id: int) -> ImportBatch:
    """The one place that turns a batch id from a URL into a batch, or 404."""
    batch = db.session.get(ImportBatch, batch_id)
    if batch is None:
        abort(404)
    return batch


def upload_root() -> Path:
    """The folder holding uploads under review (one sub-folder per batch)."""
    return services.import_root()


@bp.before_app_request
def _recover_once():
    # A batch left "creating" by a process that died is removed on the first request after a
    # start (and later ones are found by the uploads page). Decided in a read first.
    state = current_app.extensions.setdefault("milo_imports", {})
    if state.get("recovered"):
        return
    state["recovered"] = True
    try:
        services.remove_abandoned(db.session, upload_root(), now())
    except Exception:  # never fail a request for housekeeping; it runs again on the uploads page
        db.session.rollback()
        log.exception("Removing abandoned bulk uploads failed")


def _agents() -> list[Agent]:
    return list(db.session.scalars(select(Agent).where(Agent.archived_at.is_(None)).order_by(Agent.title)))


def _limit_text() -> str:
    size = current_app.config.get("MAX_CONTENT_LENGTH") or 0
    return f"{size // (1024 * 1024)} MB" if size >= 1024 * 1024 else f"{size // 1024} KB"


def _new_page(error: str | None = None, status: int = 200, agent_id: int | None = None):
    agents = _agents()
    # Only the query string: the body may be the one refused for its size (reading it raises again).
    agent_id = agent_id or int_arg(request.args, "agent_id")
    chosen = next((a for a in agents if a.id == agent_id), agents[0] if agents else None)
    context = dict(agents=agents, chosen=chosen, error=error, limit=_limit_text(), channels=CHANNELS,
                   channel_labels=CHANNEL_LABELS, max_files=parsers.MAX_FILES, max_rows=parsers.MAX_ROWS,
                   accept=",".join(parsers.ACCEPTED))
    if request.htmx and request.method == "POST":
        return render_template("imports/_drop_message.html", **context), status
    return render_template("imports/new.html", **context), status


@bp.errorhandler(RequestEntityTooLarge)
def too_large(error):
    """Over MILO_MAX_UPLOAD_MB: a message inside the drop zone (the full page without JS)."""
    return _new_page(f"These files together are larger than the {_limit_text()} this server accepts in one "
                     f"upload. Upload fewer files at a time, or zip them.", 413)


@bp.get("/candidates/uploads")
def index():
    services.remove_abandoned(db.session, upload_root(), now())
    return render_template("imports/index.html", batches=services.batches(db.session))


@bp.get("/candidates/uploads/new")
def new():
    if not _agents():
        flash("Create an interview agent first: candidates are invited to one.", "info")
        return redirect(url_for("agents.new"))
    return _new_page()


@bp.post("/candidates/uploads")
def upload():
    end_transaction(db.session)  # nothing is held while the files are read
    agent = get_agent(int_arg(request.form, "agent_id", 0))
    if agent.archived_at is not None:
        return _new_page("This interview is archived: choose another.", 422)
    files = [(f.filename or "", f.read()) for f in request.files.getlist("files") if f.filename]
    try:
        batch = services.start_upload(db.session, upload_root(), agent, files, now(), current_user.id,
                                      request.form.get("channel"), bool(request.form.get("invite")))
    except parsers.UploadRefused as err:
        return _new_page(str(err), 422, agent.id)
    target = url_for("imports.show", batch_id=batch.id)
    if request.form.get("mode") == "direct":
        # "Add at once": the guessed columns, no review.
        return _confirm(batch, services.parse_mapping(batch.mapping))
    if request.htmx:
        return "", 200, {"HX-Redirect": target}
    return redirect(target, 303)


def _form_mapping(batch: ImportBatch) -> dict:
    mapping = services.parse_mapping(batch.mapping)
    columns: dict[str, dict[int, str]] = {}
    for name, value in request.form.items():
        match = MAP_FIELD.match(name)
        if match:
            columns.setdefault(match.group(1), {})[int(match.group(2))] = value
    for key, chosen in columns.items():
        if key in mapping:
            width = max(len(mapping[key]["columns"]), max(chosen) + 1)
            mapping[key]["columns"] = [chosen.get(i, "") for i in range(width)]
    return services.parse_mapping(mapping)


def _review_page(batch: ImportBatch, mapping: dict, status: int = 200):
    channel = request.form.get("channel") or batch.channel
    if channel not in CHANNELS:
        channel = batch.channel
    invite = bool(request.form.get("invite")) if request.method == "POST" else batch.invite
    show = request.values.get("show", "")
    try:
        items = services.load_items(upload_root(), batch)
    except DomainError as err:
        return render_template("imports/expired.html", batch=batch, message=err.message), 410
    result = services.review(db.session, batch, items, mapping, channel)
    rows = [r for r in result.rows if not show or r.outcome == show]
    context = dict(batch=batch, review=result, rows=rows[:services.SHOWN_ROWS], matching=len(rows), show=show,
                   channel=channel, invite=invite, channels=CHANNELS, channel_labels=CHANNEL_LABELS,
                   fields=services.FIELDS, outcomes=services.OUTCOMES)
    if request.htmx and request.method == "POST":
        return render_template("imports/_results.html", **context), status
    return render_template("imports/review.html", **context), status


@bp.get("/candidates/uploads/<int:batch_id>")
def show(batch_id: int):
    batch = get_batch(batch_id)
    if batch.status == ImportBatch.REVIEW:
        return _review_page(batch, services.parse_mapping(batch.mapping))
    if request.htmx and request.args.get("progress"):
        # The poll of a batch being created: its progress line, or a reload once it is done.
        if batch.status != ImportBatch.CREATING:
            return "", 200, {"HX-Refresh": "true"}
        return render_template("imports/_progress.html", batch=batch)
    return render_template("imports/batch.html", batch=batch, channel_labels=CHANNEL_LABELS)


@bp.post("/candidates/uploads/<int:batch_id>/review")
@reads_only
def recheck(batch_id: int):
    """Re-check every row with the mapping, channel and filter in the form (nothing is stored)."""
    batch = get_batch(batch_id)
    if batch.status != ImportBatch.REVIEW:
        return redirect(url_for("imports.show", batch_id=batch.id), 303)
    return _review_page(batch, _form_mapping(batch))


@bp.post("/candidates/uploads/<int:batch_id>/sheet")
@reads_only
def sheet(batch_id: int):
    """Read another sheet of a workbook (the files are re-read; the database is not written)."""
    batch = get_batch(batch_id)
    if batch.status != ImportBatch.REVIEW:
        return redirect(url_for("imports.show", batch_id=batch.id), 303)
    key = request.form.get("table", "")
    try:
        services.choose_sheet(db.session, upload_root(), batch, key, request.form.get(f"sheet-{key}", ""))
    except DomainError as err:
        flash(err.message, "error")
    mapping = _form_mapping(batch)
    mapping.pop(key, None)  # another sheet has other columns: guess them again
    return _review_page(batch, mapping)


@bp.post("/candidates/uploads/<int:batch_id>/correct")
@reads_only
def correct(batch_id: int):
    """Correct the name, e-mail and phone read from one resume (kept with the files, not in the database)."""
    batch = get_batch(batch_id)
    if batch.status != ImportBatch.REVIEW:
        return redirect(url_for("imports.show", batch_id=batch.id), 303)
    key = request.form.get("fix", "")
    try:
        services.correct_resume(upload_root(), batch, key, *(request.form.get(f"fix-{key}-{field}", "")
                                                              for field in ("name", "email", "phone")))
    except DomainError as err:
        flash(err.message, "error")
    return _review_page(batch, _form_mapping(batch))


def _confirm(batch: ImportBatch, mapping: dict):
    channel = request.form.get("channel", "")
    target = url_for("imports.show", batch_id=batch.id)
    try:
        done = services.confirm(db.session, upload_root(), batch, mapping, channel, bool(request.form.get("invite")),
                                now(), current_user.id)
    except DomainError as err:
        flash(err.message, "error")
        return redirect(target, 303)
    if done.created_now and done.batch.status == ImportBatch.CREATING:
        # A large batch: the scheduler creates it; the batch page shows how far it got.
        b = done.batch
        audit.record(db.session, current_user, "bulk_upload",
                     f"upload {b.id}: {b.total_rows} rows queued for creating (interview {b.agent_id})",
                     address=request.remote_addr)
        db.session.commit()
        flash(f"Adding the {b.total_rows:,} rows in the background: this page shows how far it got. "
              f"The candidates appear all at once when the last row is in.", "info")
    elif done.created_now:
        b = done.batch
        audit.record(db.session, current_user, "bulk_upload",
                     f"upload {b.id}: {b.created_count} created, {b.duplicate_count} duplicate, {b.error_count} invalid "
                     f"(interview {b.agent_id})", address=request.remote_addr)
        db.session.commit()
        flash(f"Added {b.created_count:,} candidate{'s' * (b.created_count != 1)}"
              f"{' and queued their invites' if b.invite and b.channel != 'link' and b.created_count else ''}.",
              "success")
    else:
        flash("This upload was already confirmed: nothing was added twice.", "info")
    if request.htmx:
        return "", 200, {"HX-Redirect": target}
    return redirect(target, 303)


@bp.post("/candidates/uploads/<int:batch_id>/confirm")
def confirm(batch_id: int):
    batch = get_batch(batch_id)
    if batch.status != ImportBatch.REVIEW:
        flash("This upload was already confirmed: nothing was added twice.", "info")
        return redirect(url_for("imports.show", batch_id=batch.id), 303)
    return _confirm(batch, _form_mapping(batch))


@bp.post("/candidates/uploads/<int:batch_id>/cancel")
def cancel(batch_id: int):
    batch = get_batch(batch_id)
    try:
        services.cancel(db.session, upload_root(), batch)
    except DomainError as err:
        flash(err.message, "error")
        return redirect(url_for("imports.show", batch_id=batch_id), 303)
    flash("The upload was cancelled and its files deleted; nobody was added.", "info")
    return redirect(url_for("imports.index"), 303)


@bp.post("/candidates/uploads/<int:batch_id>/undo")
def undo(batch_id: int):
    batch = get_batch(batch_id)
    try:
        result = services.undo(db.session, batch, now(), current_user.id, upload_root())
    except DomainError as err:
        flash(err.message, "error")
    else:
        audit.record(db.session, current_user, "bulk_undo", f"upload {batch_id}: {result.summary()}",
                     address=request.remote_addr)
        db.session.commit()
        flash(result.summary(), "success")
    return redirect(url_for("imports.show", batch_id=batch_id), 303)


@bp.get("/candidates/uploads/<int:batch_id>/report.csv")
def report(batch_id: int):
    batch = get_batch(batch_id)
    if batch.status == ImportBatch.REVIEW:
        abort(404)
    return Response(stream_with_context(services.report_csv(db.session, batch)), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="upload-{batch.id}-report.csv"'})
