"""What each figure counts: the stage definitions (one set for the Metrics page, the agents
list and the agent page), the page's filters, and the SQL expressions it groups by.

Every definition is a SQL condition on one candidate row, so the same expression counts
people (``SUM(CASE WHEN ...)``) and lists them (``WHERE ...``): a drill-down shows exactly
the people a figure counted.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from typing import Mapping
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import and_, case, func, not_, or_, select

from ..candidates.services import unindexed
from ..models import CHANNELS, DEVICE_CLASSES, ROLE_LEVELS, SOURCES, Agent, Candidate, MetricsFact

C = Candidate
F = MetricsFact
PERIODS = ("7", "30", "90", "custom")
DEFAULT_PERIOD = "30"
# The funnel, in order; every rate is measured against "delivered".
FUNNEL = ("invited", "delivered", "opened", "clicked", "started", "completed")
# Longest custom range: the figures stay one read of a bounded slice.
MAX_DAYS = 400
LATE_INVITE_HOURS = 24
FOLLOWUP_TYPES = ("reminded", "nudged")
# The event types the per-candidate facts read (``Defs.grouped_facts``); the page joins only these.
FACT_EVENT_TYPES = ("opened", "machine_opened", "failed", "bounced") + FOLLOWUP_TYPES


def seconds_between(dialect: str, start, end):
    """SQL: seconds from ``start`` to ``end`` (both UTC timestamps), as a float."""
    if dialect == "postgresql":
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


# Stages reached (not the current stage): a candidate who completed also clicked and started.
COMPLETED = C.completed_at.is_not(None)
STARTED = or_(C.started_at.is_not(None), COMPLETED)
CLICKED = or_(C.clicked_at.is_not(None), STARTED)
INVITED = C.invited_at.is_not(None)
# Link-only candidates came in through the share link (or another link) and were never sent an
# invite: they enter the funnel at "clicked" (and "started"), never count as invited or
# delivered, and join the base the rates are measured against (see ``funnel_figures``).
LINK_ONLY = and_(C.invited_at.is_(None), CLICKED)


def rate_of(part: int, whole: int) -> float | None:
    """part / whole, or None when there is nobody to measure against."""
    return part / whole if whole else None


def funnel_figures(found: Mapping[str, int]) -> dict:
    """The figures every funnel shows (Metrics page, by-tables, agents list, agent page).

    The one definition of the base and the completion rate: the base ("reached") is the
    delivered invites plus the link-only candidates, who enter the funnel at "clicked"
    without an invite; completion is completed / reached.
    """
    out = dict(found)
    out["reached"] = int(found.get("delivered", 0)) + int(found.get("link_only", 0))
    out["completion"] = rate_of(int(found.get("completed", 0)), out["reached"])
    return out


class SqlLogic:
    """``stage_conditions`` building SQL conditions."""

    and_, or_, not_ = staticmethod(and_), staticmethod(or_), staticmethod(not_)


class PyLogic:
    """``stage_conditions`` deciding for one candidate's facts in Python (see ``who_mask``)."""

    and_ = staticmethod(lambda *parts: all(parts))
    or_ = staticmethod(lambda *parts: any(parts))
    not_ = staticmethod(lambda part: not part)


def stage_conditions(fact, logic=SqlLogic) -> dict:
    """The funnel's stages and what is counted beside them, built from ``fact(name)``.

    ``fact`` gives one candidate's raw facts: as SQL conditions on the candidate table for a
    drill-down (see ``Defs.facts``), or as booleans read from the bits of a ``metrics_fact``
    row for the page's counts (``who_mask``, with ``PyLogic``). Both go through this one
    function, so they cannot disagree.
    """
    and_, or_, not_ = logic.and_, logic.or_, logic.not_
    invited, clicked = fact("invited"), fact("clicked")
    opened = or_(clicked, fact("opened_event"))
    failed = and_(invited, not_(clicked), fact("invite_failed"))
    delivered = and_(invited, not_(failed))
    started, completed = fact("started"), fact("completed")
    return {
        "invited": invited,
        "delivered": delivered,
        "opened": and_(delivered, opened),
        "clicked": clicked,
        "started": started,
        "completed": completed,
        "link_only": and_(not_(invited), clicked),
        "failed": failed,
        "expired": fact("expired"),
        "opted_out": fact("opted_out"),
        # Opens by privacy proxies and scanners, and link fetches with no human signal after.
        "machine_opened": and_(delivered, fact("machine_event")),
        "machine_opened_only": and_(delivered, not_(opened), fact("machine_event")),
        "visited_only": and_(fact("visited"), not_(clicked)),
        "opened_not_clicked": and_(delivered, opened, not_(clicked)),
        "never_started": and_(delivered, not_(started)),
        "clicked_not_started": and_(clicked, not_(started)),
        "not_finished": and_(started, not_(completed)),
        "late_invite": and_(invited, fact("late")),
        "friday_invite": and_(invited, fact("friday")),
        "outside_window": and_(invited, fact("outside")),
    }


# The raw facts a ``metrics_fact`` row keeps as bits of ``flags`` (``metrics.facts``), in bit
# order; "outside" is added when the page reads them, from the invite's local hour and the
# send window set now.
FACT_BITS = ("invited", "clicked", "started", "completed", "visited", "opened_event", "machine_event",
             "invite_failed", "expired", "opted_out", "late", "friday", "outside")
OUTSIDE_BIT = 1 << FACT_BITS.index("outside")


@lru_cache(maxsize=4096)
def who_mask(flags: int, whos: tuple[str, ...]) -> int:
    """Bit i set when the candidate with these fact bits counts as ``whos[i]``.

    Kept per (bits, whos): a page meets a few hundred distinct sets of bits, the same on
    every request, and deciding each took 10 ms of the page's counting."""
    found = stage_conditions(lambda name: bool(flags >> FACT_BITS.index(name) & 1), PyLogic)
    return sum(1 << i for i, who in enumerate(whos) if found[who])


WHO_LABELS = {
    "invited": "invited", "delivered": "delivered", "opened": "opened", "clicked": "clicked",
    "started": "started", "completed": "completed", "failed": "failed to deliver", "expired": "expired",
    "opted_out": "opted out", "machine_opened": "opened by a machine", "machine_opened_only":
    "opened only by a machine", "visited_only": "link fetched, no person seen", "opened_not_clicked":
    "opened but never clicked", "never_started": "never started", "clicked_not_started":
    "clicked but never started", "not_finished": "started, did not finish", "late_invite":
    f"invited more than {LATE_INVITE_HOURS} h after being added", "friday_invite": "first invite on a Friday",
    "outside_window": "first invite outside the send window",
    "link_only": "came by a link, never invited", "left_at": "left at this question",
    "message_failed": "a message failed permanently",
}


# --- filters ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Filters:
    """The page's filters; the date range is by invite date, [since, until) in UTC.

    The range is whole days in the team's time zone ``tz``, from ``first_day`` to
    ``last_day`` both included; ``until`` is the midnight that ends ``last_day``.
    """

    since: datetime
    until: datetime
    period: str = DEFAULT_PERIOD
    start: date | None = None  # custom range, inclusive, in the team's zone
    end: date | None = None
    agent_id: int | None = None
    source: str | None = None
    src: str | None = None
    channel: str | None = None
    level: str | None = None
    tz: str = "UTC"

    @property
    def first_day(self) -> date:
        """The range's first day, in the team's zone."""
        return self.since.astimezone(_zone(self.tz)).date()

    @property
    def last_day(self) -> date:
        """The range's last day (included), in the team's zone."""
        return (self.until.astimezone(_zone(self.tz)) - timedelta(microseconds=1)).date()

    def query(self, **over) -> dict:
        """The URL query that gives these filters back (``parse``'s input)."""
        values = {"period": self.period, "from": self.start.isoformat() if self.start else "",
                  "to": self.end.isoformat() if self.end else "", "agent_id": self.agent_id or "",
                  "source": self.source or "", "src": self.src or "", "channel": self.channel or "",
                  "level": self.level or ""}
        if self.period != "custom":
            values["from"] = values["to"] = ""
        values.update(over)
        return {k: v for k, v in values.items() if v not in ("", None)}

    def qs(self, **over) -> str:
        """``query`` as a URL query string."""
        return urlencode(self.query(**over))

    def drill(self) -> str:
        """The filters with the range as absolute instants: a drill-down link stays put.

        The instants carry the team's UTC offset, so the list can say which days they cover.
        """
        zone = _zone(self.tz)
        values = {"since": self.since.astimezone(zone).isoformat(), "until": self.until.astimezone(zone).isoformat(),
                  "agent_id": self.agent_id,
                  "source": self.source, "src": self.src, "channel": self.channel, "level": self.level}
        return urlencode({k: v for k, v in values.items() if v not in ("", None)})


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _int(raw) -> int | None:
    raw = (raw or "").strip()
    if raw.isascii() and raw.isdigit() and len(raw) < 10:
        return int(raw)
    return None


def day_span(since: datetime, until: datetime) -> str:
    """The days [since, until) covers, both ends included, in the instants' own offsets."""
    first, last = since.date(), (until - timedelta(microseconds=1)).date()
    return f"{_day(first)} to {_day(last)}"


def _day(day: date) -> str:
    return f"{day:%a} {day.day} {day:%b %Y}"


def parse(args: Mapping, now: datetime, tz_name: str) -> tuple[Filters, dict[str, str]]:
    """Filters from a URL query (unknown values dropped); the errors to show by their fields.

    ``tz_name`` is the team's time zone: a range is whole days there, the last one today
    (a preset) or the custom end date, both ends included, so a pasted link means the same
    days to every recruiter.
    """
    errors: dict[str, str] = {}
    zone = _zone(tz_name)
    period = args.get("period") or DEFAULT_PERIOD
    if period not in PERIODS:
        errors["period"] = "Choose 7, 30 or 90 days, or a custom range."
        period = DEFAULT_PERIOD
    start = end = None
    today = now.astimezone(zone).date()
    if period == "custom":
        try:
            start = date.fromisoformat((args.get("from") or "").strip())
            end = date.fromisoformat((args.get("to") or "").strip())
            if end < start:
                errors["to"] = "The end date is before the start date."
            elif (end - start).days >= MAX_DAYS:
                errors["to"] = f"Choose at most {MAX_DAYS} days."
        except ValueError:
            errors["from"] = "Enter both dates as YYYY-MM-DD."
        if errors:
            period, start, end = DEFAULT_PERIOD, None, None
    if period != "custom":
        end = today
        start = today - timedelta(days=int(period) - 1)
    since = datetime.combine(start, time(0), tzinfo=zone).astimezone(timezone.utc)
    until = datetime.combine(end + timedelta(days=1), time(0), tzinfo=zone).astimezone(timezone.utc)
    filters = Filters(
        since=since, until=until, period=period,
        start=start if period == "custom" else None, end=end if period == "custom" else None,
        agent_id=_int(args.get("agent_id")),
        source=args.get("source") if args.get("source") in SOURCES else None,
        src=(args.get("src") or "").strip()[:100] or None,
        channel=args.get("channel") if args.get("channel") in CHANNELS else None,
        level=args.get("level") if args.get("level") in ROLE_LEVELS else None,
        tz=zone.key,
    )
    return filters, errors


def parse_drill(args: Mapping) -> Filters | None:
    """Filters from a drill-down link (``Filters.drill``); None when it is malformed."""
    try:
        since = datetime.fromisoformat(args.get("since") or "")
        until = datetime.fromisoformat(args.get("until") or "")
    except ValueError:
        return None
    if since.tzinfo is None or until.tzinfo is None:
        return None
    base, _ = parse(args, since, "UTC")
    return replace(base, since=since.astimezone(timezone.utc), until=until.astimezone(timezone.utc),
                   period="custom")


def fact_cohort(f: Filters, table=MetricsFact, seek: bool = True) -> list:
    """The candidates the page is about, as conditions on their ``metrics_fact`` rows (or on
    ``metrics_answer`` rows, which carry the same filter columns): those the filters keep (agent, source, share-link tag, channel, role level), invited in the date range
    (link-only candidates: who entered through the link in it).

    Erased candidates count: erasure removes a person's data, not what happened (the stage
    and its times stay, anonymous), so last season's figures do not shrink when retention
    erases them. The drill-down lists leave them out, having nothing to show.
    """
    # Never by the entered_at index on SQLite: the counts read their covering indexes whole,
    # and the other reads a narrow table in one pass (see ``candidates.services.unindexed``).
    # ``seek=False``: no filter column is an index either, for a read that must go through
    # another index (a step's durations in their order; messages of the changed templates).
    # Otherwise the one-agent view read every row of the agent (found by agent_id) in the table
    # to test a column its own index holds in order: 35-45 ms a read instead of 3-8.
    column = (lambda c: c) if seek else unindexed
    entered = unindexed(table.entered_at)
    conds = [entered >= f.since, entered < f.until]
    if f.agent_id:
        conds.append(column(table.agent_id) == f.agent_id)
    if f.source:
        conds.append(column(table.source) == f.source)
    if f.src:
        conds.append(column(table.source_detail) == f.src)
    if f.channel:
        conds.append(column(table.channel) == f.channel)
    if f.level:
        conds.append(column(table.agent_id).in_(select(Agent.id).where(Agent.role_level == f.level)))
    return conds


def outside_window(hour: int, window: tuple[int, int]) -> bool:
    """Whether an invite sent in this local hour was outside the send window (minutes of the day)."""
    lo, hi = window
    return hour * 60 + 59 < lo or hour * 60 >= hi


def fact_flags(window: tuple[int, int]):
    """SQL: a ``metrics_fact`` row's fact bits with "outside" (the send window ``window``,
    minutes of the day, as ``outside_window``) read from the invite's local hour."""
    lo, hi = window
    minute = (F.heat % 24) * 60
    return F.flags + case((or_(minute + 59 < lo, minute >= hi), OUTSIDE_BIT), else_=0)


def fact_conditions(window: tuple[int, int]) -> dict:
    """Every who-condition as SQL on ``metrics_fact`` rows (``stage_conditions`` over their bits)."""
    flags = fact_flags(window)
    return stage_conditions(lambda name: flags.op("&")(1 << FACT_BITS.index(name)) != 0)


def fact_has(name: str):
    """SQL: the ``metrics_fact`` row has raw fact ``name`` (one of the stored bits)."""
    return F.flags.op("&")(1 << FACT_BITS.index(name)) != 0


# --- dimensions: what the by-tables group by ----------------------------------------------

DIMENSIONS = {
    "source": "Source", "src": "Share-link tag", "channel": "Channel", "agent": "Interview agent",
    "level": "Role level", "device": "Device", "followups": "Follow-ups received", "heat": "Weekday × hour",
    "bucket": "Time to complete", "variant": "Invite variant", "question": "Question",
}
BUCKETS = ((3600, "under 1 h"), (6 * 3600, "1–6 h"), (86400, "6–24 h"), (2 * 86400, "1–2 days"),
           (3 * 86400, "2–3 days"), (7 * 86400, "3–7 days"), (None, "over 7 days"))


class Defs:
    """The database and the send window the page's conditions are built for."""

    def __init__(self, dialect: str, window: tuple[int, int] = (9 * 60, 18 * 60), waiting: int = 0) -> None:
        self.dialect = dialect
        self.window = window
        self.waiting = waiting  # candidates whose facts were still stale when these were made

    def dimension_value(self, name: str, raw: str):
        """A drill-down's value from its URL text, typed as the dimension's; None if invalid."""
        if name in ("agent", "followups", "heat", "bucket"):
            return _int(raw)
        if name == "device" and raw not in DEVICE_CLASSES + ("unknown",):
            return None
        return raw[:200]


DEVICE_LABELS = {"mobile": "phone", "tablet": "tablet", "desktop": "desktop", "unknown": "not seen"}
