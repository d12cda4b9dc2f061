"""Form pieces shared by several areas."""
from __future__ import annotations

from collections import defaultdict
from functools import cache
from importlib import resources
from zoneinfo import available_timezones

from email_validator import EmailNotValidError, validate_email
from wtforms import SelectChoice
from wtforms.validators import ValidationError

from .followups.rules import join_numbers, parse_days, parse_hours


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


@cache
def country_names() -> dict[str, str]:
    """ISO country code -> its English short name (from tzdata's iso3166.tab)."""
    table = resources.files("tzdata").joinpath("zoneinfo/iso3166.tab").read_text(encoding="utf-8")
    return dict(line.split("\t")[:2] for line in table.splitlines() if line and not line.startswith("#"))


def country_choices(codes) -> list[SelectChoice]:
    """Select choices "Germany (DE)" for country codes, sorted by name (a code without a name stays as is)."""
    # phonenumbers knows three regions tzdata does not name.
    names = {**country_names(), "AC": "Ascension Island", "TA": "Tristan da Cunha", "XK": "Kosovo"}
    labelled = [(code, f"{names[code]} ({code})" if code in names else code) for code in codes]
    return choices(sorted(labelled, key=lambda pair: pair[1]))


def parse_clock(text: str) -> int:
    """Minutes after midnight from "09:00" (24:00 allowed as the end of the day)."""
    try:
        hours, minutes = (int(p) for p in text.strip().split(":"))
    except ValueError:
        raise ValidationError("Use a time such as 09:00.") from None
    if not (0 <= hours <= 24 and 0 <= minutes < 60) or (hours == 24 and minutes):
        raise ValidationError("Use a time such as 09:00.")
    return hours * 60 + minutes


def clock(minutes: int | None) -> str:
    """"09:00" from minutes after midnight."""
    return "" if minutes is None else f"{minutes // 60:02d}:{minutes % 60:02d}"


def check_offsets(form, field) -> None:
    """Reminder offsets: whole hours, comma separated, e.g. "24, 48"."""
    # isascii(): str.isdigit() accepts "²", which int() then refuses.
    if field.data and not all(p.strip().isascii() and p.strip().isdigit() and 0 < int(p) <= 24 * 30
                              for p in field.data.split(",")):
        raise ValidationError("Whole hours separated by commas, e.g. 24, 48.")


# --- follow-up rules: one form shape for the team's settings and an agent's overrides ------

RULE_FIELDS = ("nudge_lead_hours", "final_nudge_lead_hours", "followup_cap")


def rules_from_form(form) -> dict:
    """The follow-up rule columns from a rules form (Settings' or an agent's); blank is None."""
    values = {
        "window_start_minute": parse_clock(form.window_start.data) if form.window_start.data else None,
        "window_end_minute": parse_clock(form.window_end.data) if form.window_end.data else None,
        "send_days": join_numbers(form.send_days.data or ()),
        "initial_send_days": join_numbers(form.initial_send_days.data or ()),
        "reminder_offsets_hours": join_numbers(parse_hours(form.reminder_offsets_hours.data)),
    }
    values.update({name: getattr(form, name).data for name in RULE_FIELDS})
    return values


def rules_into_form(form, source) -> None:
    """Fill a rules form from the Settings row or an agent (an agent's unset rules stay blank)."""
    form.window_start.data = clock(source.window_start_minute)
    # A time picker cannot show 24:00: the end of the day is shown as 23:59.
    form.window_end.data = clock(min(source.window_end_minute, 1439) if source.window_end_minute else None)
    form.send_days.data = [str(d) for d in sorted(parse_days(source.send_days))]
    form.initial_send_days.data = [str(d) for d in sorted(parse_days(source.initial_send_days))]
    form.reminder_offsets_hours.data = ", ".join(str(h) for h in parse_hours(source.reminder_offsets_hours))


def explained_email(form, field) -> None:
    """An e-mail address that mail can be sent as or to, with the reason when it cannot
    (WTForms' Email() only says "Invalid email address.", also for a reserved name such as
    ``.test``, which "Send a test" then explained)."""
    if not field.data:
        return
    try:
        validate_email(field.data.strip(), check_deliverability=False)
    except EmailNotValidError as err:
        raise ValidationError(f"Not a usable e-mail address: {err}") from None
