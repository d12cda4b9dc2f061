"""The Outbox page."""
from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from ..auth.views import safe_next
from ..candidates.services import CHANNEL_LABELS
from ..clock import now
from ..errors import DomainError
from ..extensions import db
from ..models import Message, MessageStatus
from ..pagination import page_count
from ..request_input import PAGE_MAX, int_arg
from ..settings import checks
from . import bp, services

LABELS = {
    MessageStatus.SCHEDULED: "Scheduled", MessageStatus.SENDING: "Sending", MessageStatus.SENT: "Sent",
    MessageStatus.FAILED: "Failed", MessageStatus.CANCELLED: "Cancelled", MessageStatus.SUPPRESSED: "Suppressed",
    MessageStatus.IN_DOUBT: "In doubt",
}


def get_message(message_id: int) -> Message:
    """The one place that turns a message id from a URL into a message, or 404."""
    message = db.session.get(Message, message_id)
    if message is None:
        abort(404)
    return message


@bp.get("/outbox")
def index():
    status = request.args.get("status", MessageStatus.SCHEDULED)
    if status not in MessageStatus.ALL:
        status = MessageStatus.SCHEDULED
    number = int_arg(request.args, "page", 1, minimum=1, maximum=PAGE_MAX)
    rows, total = services.page(db.session, status, number)
    return render_template("outbox/index.html", rows=rows, total=total, status=status, counts=services.counts(db.session),
                           labels=LABELS, channel_labels=CHANNEL_LABELS, page=number,
                           pages=page_count(total, services.PAGE_SIZE),
                           failing=checks.failing(db.session, now()))


@bp.post("/outbox/<int:message_id>/<action>")
def act(message_id: int, action: str):
    message = get_message(message_id)
    status = message.status
    try:
        text = services.act(db.session, message, action, now(), current_user.name)
    except DomainError as err:
        db.session.rollback()
        flash(err.message, "error")
    else:
        db.session.commit()
        flash(text, "success")
    return redirect(safe_next(request.form.get("back"), url_for("outbox.index", status=status)))
