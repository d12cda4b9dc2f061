"""Form pieces shared by several areas."""
from __future__ import annotations

from functools import cache
from zoneinfo import available_timezones

from wtforms.validators import ValidationError


@cache
def timezone_choices() -> list[tuple[str, str]]:
    """Every IANA time zone name, sorted, as select choices."""
    names = sorted(n for n in available_timezones() if "/" in n or n == "UTC")
    return [(n, n.replace("_", " ")) for n in names]


def valid_timezone(form, field) -> None:
    """WTForms validator: the value must be a known IANA zone."""
    if field.data not in dict(timezone_choices()):
        raise ValidationError("Choose a time zone from the list.")
