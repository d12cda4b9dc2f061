"""The Metrics page (/metrics): one endpoint, the whole page or (htmx) its figures."""
from __future__ import annotations

from flask import Response, abort, flash, redirect, render_template, request, url_for
from datetime import datetime

from sqlalchemy import select

from ..auth.forms import EmptyForm
from ..clock import now
from ..extensions import db
from ..models import CHANNELS, ROLE_LEVELS, SOURCES, Agent, Template
from ..settings.services import get_settings
from . import bp, definitions, services


def _filters():
    # The team's zone, not the viewer's: a pasted link means the same days to everyone.
    return definitions.parse(request.args, now(), get_settings(db.session).default_timezone)


@bp.app_template_filter("metrics_days")
def metrics_days(args: dict) -> str:
    """A drill-down's range (``since``/``until`` of ``Filters.drill``) as the days it covers."""
    try:
        return definitions.day_span(datetime.fromisoformat(args.get("since", "")),
                                    datetime.fromisoformat(args.get("until", "")))
    except ValueError:
        return ""


def _context(filters, errors) -> dict:
    return dict(
        f=filters, errors=errors, figures=services.page(db.session, filters), d=definitions, s=services,
        agents=db.session.execute(select(Agent.id, Agent.title).order_by(Agent.title)).all(),
        sources=SOURCES, channels=CHANNELS, levels=ROLE_LEVELS, action_form=EmptyForm(),
        drill=lambda who, dim=None, value=None: url_for(
            "candidates.index", metric=who, metric_dim=dim, metric_value=value) + "&" + filters.drill(),
    )


@bp.get("/metrics")
def index():
    """The page; an htmx request (the filter form) gets only the figures."""
    filters, errors = _filters()
    ctx = _context(filters, errors)
    if request.htmx and request.htmx.target == "metrics-figures":
        return render_template("metrics/_figures.html", **ctx)
    return render_template("metrics/index.html", **ctx)


@bp.get("/metrics/<table>.csv")
def export(table: str):
    """One table of the page as CSV (formula cells neutralised)."""
    if table not in services.TABLES:
        abort(404)
    filters, _ = _filters()
    header, rows = services.table_csv(services.page(db.session, filters), table)
    stamp = now().strftime("%Y%m%d-%H%M")
    return Response(services.to_csv(header, rows), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="metrics-{table}-{stamp}.csv"'})


@bp.post("/metrics/variants/<int:template_id>/only")
def only_variant(template_id: int):
    """Make the winning variant the only active one of its kind and channel (CSRFProtect checks the token)."""
    template = db.session.get(Template, template_id)
    if template is None:
        abort(404)
    off = services.make_only_variant(db.session, template)
    db.session.commit()
    flash(f"Variant {template.variant} is now the only {template.channel} invite ({off} other variant"
          f"{'s' if off != 1 else ''} switched off).", "success")
    back = request.form.get("back", "")
    return redirect(url_for("metrics.index") + ("?" + back if back and "//" not in back else ""))
