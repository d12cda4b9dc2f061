"""Timing rules: when a message may go out, in the candidate's own time zone.

Pure functions of their arguments (``now`` included), so every rule can be tested at any
instant. Local times are built with ``zoneinfo`` day by day: a 09:00 window start means
09:00 on the wall clock on both sides of a daylight-saving change.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = timezone.utc
FOLLOW_UP_KINDS = ("reminder", "nudge", "final_nudge", "manual_nudge")
AUTOMATIC_KINDS = ("reminder", "nudge", "final_nudge")


def _digits(part: str) -> bool:
    """ASCII digits only: str.isdigit() accepts "²", which int() then refuses."""
    part = part.strip()
    return part.isascii() and part.isdigit()


def parse_days(text: str | None) -> frozenset[int]:
    """ISO weekdays from "1,2,3" (1 = Monday)."""
    return frozenset(int(p) for p in (text or "").split(",") if _digits(p) and 1 <= int(p) <= 7)


def parse_hours(text: str | None) -> tuple[int, ...]:
    """Reminder offsets in hours from "24,48", sorted."""
    return tuple(sorted({int(p) for p in (text or "").split(",") if _digits(p) and int(p) > 0}))


def join_numbers(numbers) -> str | None:
    """The stored form of days or hours: "1,2,3" (sorted, no repeats), or None for none."""
    return ",".join(str(n) for n in sorted({int(n) for n in numbers})) or None


@dataclass(frozen=True)
class Rules:
    """The follow-up rules in force for one agent (team settings with the agent's overrides)."""

    window_start: int = 9 * 60          # minutes after local midnight
    window_end: int = 18 * 60
    send_days: frozenset[int] = frozenset({1, 2, 3, 4, 5})
    initial_days: frozenset[int] = frozenset({1, 2, 3, 4})
    reminder_offsets: tuple[int, ...] = (24, 48)
    nudge_lead: int = 24                # hours before the deadline
    final_nudge_lead: int | None = 2
    cap: int = 3
    spacing_auto: timedelta = timedelta(hours=20)
    spacing_manual: timedelta = timedelta(hours=1)


def zone(name: str | None) -> ZoneInfo:
    """The named zone, or UTC when the name is unknown."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _local(day: date, minute: int, tz: ZoneInfo) -> datetime:
    """The instant of a wall-clock time on a day; a time skipped by DST moves forward.

    Minute 1440 is the midnight that ends the day (a window "until 24:00").
    """
    day, minute = day + timedelta(days=minute // 1440), minute % 1440
    wall = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=tz)
    # Round-trip through UTC: a non-existent wall time (spring forward) becomes the real one.
    return wall.astimezone(UTC).astimezone(tz)


def in_window(at: datetime, tz_name: str, rules: Rules, initial: bool) -> bool:
    """Whether ``at`` is inside the send window on an allowed day, candidate-local."""
    tz = zone(tz_name)
    local = at.astimezone(tz)
    days = rules.initial_days if initial else rules.send_days
    if local.isoweekday() not in days:
        return False
    start, end = _local(local.date(), rules.window_start, tz), _local(local.date(), rules.window_end, tz)
    return start <= local < end


def next_allowed(at: datetime, tz_name: str, rules: Rules, initial: bool = False) -> datetime | None:
    """The first instant at or after ``at`` inside the window on an allowed day (UTC).

    ``initial`` uses the days allowed for first invites ("avoid Fridays"). None when no day
    is allowed at all.
    """
    tz = zone(tz_name)
    days = rules.initial_days if initial else rules.send_days
    if not days or rules.window_end <= rules.window_start:
        return None
    local = at.astimezone(tz)
    for offset in range(0, 15):
        day = local.date() + timedelta(days=offset)
        if day.isoweekday() not in days:
            continue
        start, end = _local(day, rules.window_start, tz), _local(day, rules.window_end, tz)
        if offset == 0:
            if local < start:
                return start.astimezone(UTC)
            if local < end:
                return at.astimezone(UTC)
            continue
        return start.astimezone(UTC)
    return None


# The latest moment a search backwards picks is this much before the window closes, so a
# tick that runs a little late still finds it inside the window.
WINDOW_END_MARGIN = timedelta(minutes=15)


def latest_allowed_before(limit: datetime, tz_name: str, rules: Rules, initial: bool = False) -> datetime | None:
    """The latest moment at or before ``limit`` inside the window on an allowed day (UTC),
    at most WINDOW_END_MARGIN before the window closes.

    None when no such moment exists in the two weeks before ``limit``.
    """
    tz = zone(tz_name)
    days = rules.initial_days if initial else rules.send_days
    if not days or rules.window_end <= rules.window_start:
        return None
    local = limit.astimezone(tz)
    for offset in range(0, 15):
        day = local.date() - timedelta(days=offset)
        if day.isoweekday() not in days:
            continue
        start = _local(day, rules.window_start, tz)
        latest = max(_local(day, rules.window_end, tz) - WINDOW_END_MARGIN, start)
        if offset == 0 and local < start:
            continue
        return min(local, latest).astimezone(UTC) if offset == 0 else latest.astimezone(UTC)
    return None


@dataclass(frozen=True)
class Moment:
    """When a follow-up goes: ``when`` (UTC), or None with the reason it cannot go."""

    when: datetime | None
    reason: str = ""


NO_MOMENT = "No moment in the send window before the deadline"


def reminder_moment(invited_at: datetime, hours: int, deadline: datetime, tz_name: str, rules: Rules,
                    now: datetime) -> Moment:
    """Reminder ``hours`` after the invite: the first allowed moment from then (or from now)."""
    when = next_allowed(max(invited_at + timedelta(hours=hours), now), tz_name, rules)
    if when is None or when >= deadline:
        return Moment(None, NO_MOMENT)
    return Moment(when)


def nudge_moment(deadline: datetime, lead: int, tz_name: str, rules: Rules, now: datetime) -> Moment:
    """A nudge ``lead`` hours before the deadline: the latest allowed moment that is still at
    least ``lead`` before it.

    Searching backwards is what makes the defaults work: a deadline at 23:59 with the window
    ending at 18:00 gets its 2-hour final nudge at 17:45 that day, and a deadline on a
    weekend gets its nudge on the Friday. When that moment has passed (they started late),
    the nudge goes at the next allowed moment if that is still before the deadline.
    """
    target = latest_allowed_before(deadline - timedelta(hours=lead), tz_name, rules)
    if target is not None and target >= now:
        return Moment(target)
    when = next_allowed(now, tz_name, rules)
    if when is None or when >= deadline:
        return Moment(None, NO_MOMENT)
    return Moment(when)


def backoff(attempts: int, base: timedelta = timedelta(minutes=1), cap: timedelta = timedelta(hours=1)) -> timedelta:
    """Delay before retrying after ``attempts`` temporary failures: 1, 2, 4... minutes, capped."""
    return min(base * (2 ** max(attempts - 1, 0)), cap)


def rules_for(settings, agent=None) -> Rules:
    """The rules for an agent: its own overrides where set, else the team's settings."""

    def pick(name_agent: str, name_settings: str):
        value = getattr(agent, name_agent, None) if agent is not None else None
        return value if value is not None else getattr(settings, name_settings)

    final = pick("final_nudge_lead_hours", "final_nudge_lead_hours")
    return Rules(
        window_start=pick("window_start_minute", "window_start_minute"),
        window_end=pick("window_end_minute", "window_end_minute"),
        send_days=parse_days(pick("send_days", "send_days")),
        initial_days=parse_days(pick("initial_send_days", "initial_send_days")),
        reminder_offsets=parse_hours(pick("reminder_offsets_hours", "reminder_offsets_hours")),
        nudge_lead=pick("nudge_lead_hours", "nudge_lead_hours"),
        final_nudge_lead=final or None,
        cap=pick("followup_cap", "followup_cap"),
        spacing_auto=timedelta(hours=settings.min_spacing_auto_hours),
        spacing_manual=timedelta(hours=settings.min_spacing_manual_hours),
    )
