"""Form pieces shared by several areas."""
from __future__ import annotations

from functools import cache
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
