"""The Metrics page (/metrics): one endpoint, the whole page or (htmx) its figures."""
from __future__ import annotations

from flask import Response, abort, flash, redirect, render_template, request, url_for
from datetime import datetime
from urllib.parse import quote_plus, urlencode

from sqlalchemy import select

from ..agents.forms import ROLE_LEVEL_CHOICES
from ..auth.forms import EmptyForm
from ..candidates.services import CHANNEL_LABELS, SOURCE_LABELS
from ..clock import now
from ..extensions import db
from ..formatting import thousands
from ..models import CHANNELS, ROLE_LEVELS, SOURCES, Agent, Template
from ..settings.services import get_settings
from . import bp, definitions, services


# Stored values as people read them: the label maps the candidates pages and the agent
# form already use, so a source or channel reads the same on every page.
VALUE_LABELS = {
    "source": SOURCE_LABELS, "channel": CHANNEL_LABELS,
    "level": {c.value: c.label for c in ROLE_LEVEL_CHOICES}, "device": definitions.DEVICE_LABELS,
}
# CSV tables whose first column is a channel.
_CSV_CHANNEL_TABLES = ("channels", "ab")


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


@bp.app_template_filter("metrics_value")
def metrics_value(value, dim: str | None) -> str:
    """A stored value of one Metrics dimension (a source, channel, level, weekday × hour…) as people read it."""
    if value is None or value == "":
        return "(no tag)" if dim == "src" else "—"
    labels = VALUE_LABELS.get(dim or "")
    if labels is not None:
        return labels.get(str(value), str(value))
    text = str(value)
    if dim == "heat" and text.isdigit() and int(text) < 7 * 24:
        return f"{services.WEEKDAYS[int(text) // 24]} {int(text) % 24:02d}:00"
    if dim == "bucket" and text.isdigit() and int(text) < len(definitions.BUCKETS):
        return definitions.BUCKETS[int(text)][1]
    if dim == "followups" and text == "3":
        return "3 or more"
    if dim == "variant" and "/" in text:
        channel, variant = text.split("/", 1)
        return f"{CHANNEL_LABELS.get(channel, channel)} {variant}"
    if dim == "step":
        return services.STEP_LABELS.get(text, text)
    if dim == "agent" and text.isdigit():
        title = db.session.scalar(select(Agent.title).where(Agent.id == int(text)))
        return title or text
    return text


@bp.app_template_filter("metrics_dim")
def metrics_dim(dim: str | None) -> str:
    """A drill-down's dimension name as the Metrics page heads it."""
    return definitions.DIMENSIONS.get(dim or "", (dim or "").replace("_", " ").capitalize())


def _human_labels(figures: dict) -> dict:
    """Label the by-tables' stored values (share_link, email, senior…) for people, in place."""
    for name in VALUE_LABELS:
        for row in figures.get("by", {}).get(name, []):
            row["label"] = metrics_value(row["key"], name)
    return figures


def delivery_rows(rows: list[dict]) -> list[tuple]:
    """The deliverability chart's groups: (channel label, sent, failed permanently)."""
    return [(metrics_value(r["key"], "channel"), r["sent"], r["failed"]) for r in rows]


def heat_cells(cells: dict, weekdays) -> list[tuple[str, str, str]]:
    """The heat map's 168 cells as drawn, weekday by weekday then hour by hour: (fill,
    opacity, tooltip). Worked out once for both layouts (wide and tall) of the chart."""
    drawn = []
    for wd in range(7):
        for h in range(24):
            cell = cells.get(wd * 24 + h)
            when = f"{weekdays[wd]} {h:02d}:00 — "
            if cell is None:
                drawn.append(("#f3f4f6", "1", when + "no invites"))
                continue
            tip = f"{when}{thousands(cell['invited'])} invited, {thousands(cell['completed'])} completed"
            if cell["completion"] is None:
                drawn.append(("#f3f4f6", "1", tip))
            else:
                drawn.append(("#1d4ed8", f"{0.1 + 0.9 * cell['completion']:.2f}", tip))
    return drawn


def _context(filters, errors) -> dict:
    return dict(
        f=filters, errors=errors, figures=_human_labels(services.page(db.session, filters)), d=definitions, s=services,
        agents=db.session.execute(select(Agent.id, Agent.title).order_by(Agent.title)).all(),
        sources=SOURCES, channels=CHANNELS, levels=ROLE_LEVELS, action_form=EmptyForm(), delivery_rows=delivery_rows,
        heat_cells=heat_cells,
        drill=_drill_links(filters),
    )


def _drill_links(filters):
    """A drill-down link maker for this page: the page has a thousand of them, so the list's
    address and the filters' part are built once (the same address ``url_for`` builds), each
    figure's and dimension's part once per page, and a value is quoted alone (encoding whole
    queries took half of the page's rendering)."""
    base, suffix = url_for("candidates.index"), "&" + filters.drill()
    heads: dict = {}

    def drill(who, dim=None, value=None) -> str:
        head = heads.get((who, dim))
        if head is None:
            args = [(k, v) for k, v in (("metric", who), ("metric_dim", dim)) if v is not None]
            head = heads[(who, dim)] = f"{base}?{urlencode(args, safe=_URL_SAFE)}"
        if value is None:
            return head + suffix
        text = str(value) if isinstance(value, int) else quote_plus(str(value), safe=_URL_SAFE)
        return f"{head}&metric_value={text}{suffix}"

    return drill


# What werkzeug leaves unquoted in a query (its url_for), so the links read the same.
_URL_SAFE = "!$'()*,/:;?@"


@bp.get("/metrics")
def index():
    """The page; an htmx request (the filter form) gets only the figures."""
    if request.htmx and request.args.get("period") == "custom" and not (
            request.args.get("from", "").strip() and request.args.get("to", "").strip()):
        # "a custom range" chosen, or one date typed: nothing to show until both are in.
        # Answering with figures or an error would redraw the form back to the last period.
        return "", 204
    filters, errors = _filters()
    if errors and request.htmx:
        # Only the figures are swapped in place: the messages belong next to the form's
        # fields, so the browser loads the whole page for this address instead.
        return "", 200, {"HX-Redirect": request.full_path}
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
    header, rows = services.table_csv(_human_labels(services.page(db.session, filters)), table)
    if table in _CSV_CHANNEL_TABLES:
        rows = [[CHANNEL_LABELS.get(row[0], row[0]), *row[1:]] for row in rows]
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
