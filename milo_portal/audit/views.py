"""The Audit log page (filters by person, kind and day) and its CSV export."""
from __future__ import annotations

from datetime import date

from flask import Response, render_template, request, stream_with_context
from flask_login import current_user
from sqlalchemy import select

from ..clock import now
from ..extensions import db
from ..models import User
from ..request_input import int_arg
from . import bp, services


def _day(name: str) -> date | None:
    text = (request.args.get(name) or "").strip()
    if len(text) != 10:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _filters() -> services.AuditFilters:
    kind = (request.args.get("kind") or "").strip()[:40] or None
    return services.AuditFilters(actor_id=int_arg(request.args, "person"), kind=kind, since=_day("since"),
                                 until=_day("until"), before_id=int_arg(request.args, "before"),
                                 tz=current_user.timezone)


@bp.get("/audit")
def index():
    filters = _filters()
    rows, older = services.entries(db.session, filters)
    people = db.session.scalars(select(User).order_by(User.name)).all()
    args = {k: v for k, v in request.args.items() if k != "before"}
    return render_template("audit/index.html", rows=rows, older=older, people=people, filters=filters,
                           kinds=services.kinds_in_use(db.session), args=args, labels=services.KINDS)


@bp.get("/audit.csv")
def export():
    filters = _filters()
    stamp = now().strftime("%Y%m%d-%H%M")
    return Response(stream_with_context(services.export_csv(db.session, filters)), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="audit-{stamp}.csv"'})
