"""Form pieces shared by several areas."""
from __future__ import annotations

from collections import defaultdict
from functools import cache
from importlib import resources
from zoneinfo import available_timezones

from wtforms import SelectChoice
from wtforms.validators import ValidationError


def choices(pairs) -> list[SelectChoice]:
    """Select choices from (value, label) pairs."""
    return [SelectChoice(str(value), label) for value, label in pairs]


@cache
def timezone_names() -> frozenset[str]:
    """Every IANA time zone name offered in the app."""
    return frozenset(n for n in available_timezones() if "/" in n or n == "UTC")


def timezone_choices() -> list[SelectChoice]:
    """Every IANA time zone name, sorted, as select choices."""
    return choices((n, n.replace("_", " ")) for n in sorted(timezone_names()))


def valid_timezone(form, field) -> None:
    """WTForms validator: the value must be a known IANA zone."""
    if field.data not in timezone_names():
        raise ValidationError("Choose a time zone from the list.")


@cache
def country_zones() -> dict[str, tuple[str, ...]]:
    """ISO country code -> the IANA zones used there (from tzdata's zone.tab)."""
    table = resources.files("tzdata").joinpath("zoneinfo/zone.tab").read_text(encoding="utf-8")
    zones: dict[str, list[str]] = defaultdict(list)
    for line in table.splitlines():
        if line and not line.startswith("#"):
            code, _coords, zone = line.split("\t")[:3]
            zones[code].append(zone)
    return {code: tuple(z) for code, z in zones.items()}
