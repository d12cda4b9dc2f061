"""What each figure counts: the stage definitions (one set for the Metrics page, the agents
list and the agent page), the page's filters, and the SQL expressions it groups by.

Every definition is a SQL condition on one candidate row, so the same expression counts
people (``SUM(CASE WHEN ...)``) and lists them (``WHERE ...``): a drill-down shows exactly
the people a figure counted.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, timezone
from typing import Mapping
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Integer, String, and_, case, cast, exists, func, literal, literal_column, not_, or_, select

from ..models import CHANNELS, DEVICE_CLASSES, ROLE_LEVELS, SOURCES, Agent, Answer, Candidate, Event, Message

C = Candidate
PERIODS = ("7", "30", "90", "custom")
DEFAULT_PERIOD = "30"
# The funnel, in order; every rate is measured against "delivered".
FUNNEL = ("invited", "delivered", "opened", "clicked", "started", "completed")
# Longest custom range: the figures stay one read of a bounded slice.
MAX_DAYS = 400
LATE_INVITE_HOURS = 24
FOLLOWUP_TYPES = ("reminded", "nudged")


def _has_event(*types: str):
    return exists().where(Event.candidate_id == C.id, Event.type.in_(types))


def _invite_failed():
    # A failure or bounce of the invite itself (a reminder's failure says nothing of the invite).
    return exists().where(Event.candidate_id == C.id, Event.type.in_(("failed", "bounced")),
                          Event.message_id == Message.id, Message.kind == "invite")


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
# When a link-only candidate entered the funnel: the share link clicks and starts at once.
ENTERED_AT = func.coalesce(C.clicked_at, C.started_at, C.completed_at)


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


def stage_conditions(fact) -> dict:
    """The funnel's stages and what is counted beside them, built from ``fact(name)``.

    ``fact`` gives one candidate's raw facts as SQL conditions (see ``Defs.facts``): on the
    candidate table for a drill-down, on the page's materialized per-candidate rows for
    the counts. Both go through this one function, so they cannot disagree.
    """
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


WHO_LABELS = {
    "invited": "invited", "delivered": "delivered", "opened": "opened", "clicked": "clicked",
    "started": "started", "completed": "completed", "failed": "failed to deliver", "expired": "expired",
    "opted_out": "opted out", "machine_opened": "opened by a machine", "machine_opened_only":
    "opened only by a machine", "visited_only": "link fetched, no person seen", "opened_not_clicked":
    "opened but never clicked", "never_started": "never started", "clicked_not_started":
    "clicked but never started", "not_finished": "started, did not finish", "late_invite":
    f"invited more than {LATE_INVITE_HOURS} h after being added", "friday_invite": "first invite on a Friday",
    "outside_window": "first invite outside the send window",
    "link_only": "came through the share link, never invited", "left_at": "left at this question",
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


def base_conditions(f: Filters) -> list:
    """Who the filters keep, apart from the date range: agent, source, channel, level.

    Erased candidates count: erasure removes a person's data, not what happened (the stage
    and its times stay, anonymous), so last season's figures do not shrink when retention
    erases them. The drill-down lists leave them out, having nothing to show.
    """
    conds = []
    if f.agent_id:
        conds.append(C.agent_id == f.agent_id)
    if f.source:
        conds.append(C.source == f.source)
    if f.src:
        conds.append(C.source_detail == f.src)
    if f.channel:
        conds.append(C.channel == f.channel)
    if f.level:
        conds.append(C.agent_id.in_(select(Agent.id).where(Agent.role_level == f.level)))
    return conds


def entered_between(since: datetime, until: datetime):
    """SQL: invited in [since, until), or, never invited, entered through a link in it."""
    return or_(and_(C.invited_at >= since, C.invited_at < until),
               and_(C.invited_at.is_(None), ENTERED_AT >= since, ENTERED_AT < until))


def cohort(f: Filters) -> list:
    """The candidates the page is about: those the filters keep, invited in the date range
    (link-only candidates: who entered through the link in it)."""
    return base_conditions(f) + [entered_between(f.since, f.until)]


# --- candidate-local time -----------------------------------------------------------------

def _offset(zone: ZoneInfo, instant: datetime) -> int:
    return int(instant.astimezone(zone).utcoffset().total_seconds() // 60)


def zone_offsets(zones: list[str], since: datetime, until: datetime) -> list[tuple[str, datetime, datetime, int]]:
    """(zone, from, to, UTC offset in minutes) covering [since, until) for each zone.

    SQLite has no time zone database, so the invite's local time is computed in SQL from
    these intervals (a handful per zone: one per daylight-saving change). Offsets change
    months apart, so stepping six hours and narrowing each change to the minute finds them all.
    """
    out = []
    step = timedelta(hours=6)
    for name in sorted(set(zones)):
        zone = _zone(name)
        start, offset, t = since, _offset(zone, since), since
        while t < until:
            nxt = min(t + step, until)
            if nxt < until and _offset(zone, nxt) != offset:
                lo, hi = t, nxt
                while hi - lo > timedelta(minutes=1):
                    mid = lo + (hi - lo) / 2
                    lo, hi = (mid, hi) if _offset(zone, mid) == offset else (lo, mid)
                hi = hi.replace(second=0, microsecond=0)
                out.append((name, start, hi, offset))
                start, offset = hi, _offset(zone, hi)
            t = nxt
        out.append((name, start, until, offset))
    return out


class Local:
    """SQL for the candidate-local weekday (0 = Monday) and hour of a UTC timestamp column."""

    def __init__(self, dialect: str, offsets: list[tuple[str, datetime, datetime, int]]) -> None:
        self.dialect = dialect
        whens = [(and_(C.timezone == zone, C.invited_at >= lo, C.invited_at < hi), off)
                 for zone, lo, hi, off in offsets if off]
        self.offset = case(*whens, else_=0) if whens else literal(0)

    def parts(self, column):
        """(weekday, hour) SQL integers of ``column`` moved to the candidate's zone."""
        if self.dialect == "postgresql":
            local = column + self.offset * literal_column("interval '1 minute'")
            return (cast((func.extract("dow", local) + 6), Integer) % 7, cast(func.extract("hour", local), Integer))
        local = func.datetime(column, cast(self.offset, String) + literal(" minutes"))
        return ((cast(func.strftime("%w", local), Integer) + 6) % 7, cast(func.strftime("%H", local), Integer))


# --- dimensions: what the by-tables group by ----------------------------------------------

DIMENSIONS = {
    "source": "Source", "src": "Share-link tag", "channel": "Channel", "agent": "Interview agent",
    "level": "Role level", "device": "Device", "followups": "Follow-ups received", "heat": "Weekday × hour",
    "bucket": "Time to complete", "variant": "Invite variant", "question": "Question",
}
BUCKETS = ((3600, "under 1 h"), (6 * 3600, "1–6 h"), (86400, "6–24 h"), (2 * 86400, "1–2 days"),
           (3 * 86400, "2–3 days"), (7 * 86400, "3–7 days"), (None, "over 7 days"))


def answers_count():
    """SQL: how many questions the candidate has answered."""
    return select(func.count()).where(Answer.candidate_id == C.id).correlate(C).scalar_subquery()


def followups_count():
    """SQL: follow-ups received before completing (or so far), 3 meaning "3 or more"."""
    n = (select(func.count()).where(Event.candidate_id == C.id, Event.type.in_(FOLLOWUP_TYPES),
                                    or_(C.completed_at.is_(None), Event.at < C.completed_at))
         .correlate(C).scalar_subquery())
    return case((n >= 3, 3), else_=n)


class Defs:
    """The conditions and group-by expressions for one database and date range."""

    def __init__(self, dialect: str, offsets, window: tuple[int, int] = (9 * 60, 18 * 60)) -> None:
        self.dialect = dialect
        self.local = Local(dialect, offsets)
        weekday, hour = self.local.parts(C.invited_at)
        self.weekday, self.hour = weekday, hour
        self.window = window
        lo, hi = window
        minute = hour * 60
        self.facts = {
            "invited": INVITED, "clicked": CLICKED, "started": STARTED, "completed": COMPLETED,
            "visited": C.visited_at.is_not(None), "opened_event": _has_event("opened"),
            "machine_event": _has_event("machine_opened"), "invite_failed": _invite_failed(),
            "expired": C.stage == "expired", "opted_out": C.stage == "opted_out",
            "late": seconds_between(dialect, C.created_at, C.invited_at) > LATE_INVITE_HOURS * 3600,
            "friday": weekday == 4, "outside": or_(minute + 59 < lo, minute >= hi),
        }
        self.who = stage_conditions(self.facts.__getitem__)

    def grouped_facts(self) -> tuple[dict, dict]:
        """The facts and the event-based dimensions for a candidate LEFT JOIN event GROUP BY candidate.

        The same facts as ``facts`` (which the drill-down uses on single candidates), but every
        event fact is an aggregate over the candidate's events: the page reads each cohort
        candidate's events once, in one pass, instead of one lookup per fact per candidate.
        """
        def any_event(cond):
            return func.max(case((cond, 1), else_=0)) == 1

        invite = (exists().where(Message.id == Event.message_id, Message.kind == "invite")
                  .correlate(Event))
        failed = func.max(case((Event.type.in_(("failed", "bounced")), case((invite, 1), else_=0)), else_=0)) == 1
        facts = dict(self.facts, opened_event=any_event(Event.type == "opened"),
                     machine_event=any_event(Event.type == "machine_opened"), invite_failed=failed)
        n = func.coalesce(func.sum(case((and_(Event.type.in_(FOLLOWUP_TYPES),
                                              or_(C.completed_at.is_(None), Event.at < C.completed_at)), 1),
                                        else_=0)), 0)
        return facts, {"followups": case((n >= 3, 3), else_=n)}

    def dimension(self, name: str):
        """The SQL expression a by-table groups by."""
        if name == "source":
            return C.source
        if name == "src":
            return case((C.source == "share_link", func.coalesce(C.source_detail, "")))
        if name == "channel":
            return C.channel
        if name == "agent":
            return C.agent_id
        if name == "level":
            return select(Agent.role_level).where(Agent.id == C.agent_id).correlate(C).scalar_subquery()
        if name == "device":
            return func.coalesce(C.device_class, "unknown")
        if name == "followups":
            return followups_count()
        if name == "heat":
            return self.weekday * 24 + self.hour
        if name == "bucket":
            d = seconds_between(self.dialect, C.invited_at, C.completed_at)
            # Only for those invited who completed (NULL for everyone else: a share-link
            # newcomer has no time since an invite, and would otherwise land in the last bar).
            return case((or_(C.completed_at.is_(None), C.invited_at.is_(None)), None),
                        *[(d < limit, i) for i, (limit, _) in enumerate(BUCKETS) if limit], else_=len(BUCKETS) - 1)
        if name == "variant":
            return (select(Message.channel + literal("/") + func.coalesce(Message.variant, "A"))
                    .where(Message.candidate_id == C.id, Message.kind == "invite", Message.step == 1)
                    .correlate(C).scalar_subquery())
        raise KeyError(name)

    def dimension_value(self, name: str, raw: str):
        """A drill-down's value from its URL text, typed as the dimension's; None if invalid."""
        if name in ("agent", "followups", "heat", "bucket"):
            return _int(raw)
        if name == "device" and raw not in DEVICE_CLASSES + ("unknown",):
            return None
        return raw[:200]


DEVICE_LABELS = {"mobile": "phone", "tablet": "tablet", "desktop": "desktop", "unknown": "not seen"}
