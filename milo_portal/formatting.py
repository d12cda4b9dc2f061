"""Jinja filters for showing UTC instants in a person's time zone."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Flask


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


def register_filters(app: Flask) -> None:
    """Make the filters available to templates."""
    app.add_template_filter(format_local, "local")
