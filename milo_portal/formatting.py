"""Jinja filters: UTC instants in a person's time zone, and whole numbers with thousands separators."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Flask
from markupsafe import Markup

from .clock import now


def to_zone(value: datetime | None, tz_name: str | None) -> datetime | None:
    """Convert an aware instant to the named zone (UTC if the name is unknown)."""
    if value is None:
        return None
    try:
        zone = ZoneInfo(tz_name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return value.astimezone(zone)


def format_local(value: datetime | None, tz_name: str | None, fmt: str = "%a %d %b %Y %H:%M") -> str:
    """Format an instant in a zone, with the zone's abbreviation, or an em dash for none."""
    local = to_zone(value, tz_name)
    if local is None:
        return "—"
    return f"{local.strftime(fmt)} {local.tzname()}"


def thousands(value) -> str:
    """A whole number as the tables print it (12,345); anything else (a rate, a label) as it is."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def register_filters(app: Flask) -> None:
    """Make the filters available to templates."""
    app.add_template_filter(format_local, "local")
    app.add_template_filter(time_ago, "ago")
    app.add_template_filter(thousands, "thousands")


def relative(value: datetime | None, moment: datetime) -> str:
    """A short distance from ``moment``: "just now", "5 min ago", "3 h ago", "3 d ago", "in 2 d"."""
    seconds = (value - moment).total_seconds()
    span = abs(seconds)
    if span < 60:
        return "just now"
    for size, unit in ((86400 * 365, "y"), (86400 * 30, "mo"), (86400, "d"), (3600, "h"), (60, "min")):
        if span >= size:
            amount = f"{int(span // size)} {unit}"
            break
    return f"in {amount}" if seconds > 0 else f"{amount} ago"


def time_ago(value: datetime | None, tz_name: str | None, fmt: str = "%a %d %b %Y %H:%M") -> Markup:
    """A ``<time>`` with the short relative date, the exact local time on hover (title)."""
    if value is None:
        return Markup('<span class="muted">—</span>')
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        value.isoformat(timespec="seconds"), format_local(value, tz_name, fmt), relative(value, now()))
