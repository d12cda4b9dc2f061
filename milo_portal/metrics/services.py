"""The Metrics page's figures, SQL aggregates over the candidates' facts (``metrics_fact``,
``metrics_answer``: see ``facts``), each read from an index in its own order; Python only
shapes the few aggregated rows.

Rates are measured against *delivered*. Percentiles are nearest-rank: the value at rank
ceil(p·n) of the n sorted durations (the median of 4 values is the 2nd), read at that
offset of the duration's index.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

from sqlalchemy import (String, and_, case, cast, distinct, exists, func, literal, not_, select, union_all,
                        update)
from sqlalchemy.orm import Session, aliased

from ..candidates import tally
from ..candidates.services import csv_safe  # noqa: F401  (one neutraliser for every CSV; tests use it here)
from ..models import (Agent, Candidate, Event, Message, MessageStatus, MetricsAnswer, MetricsFact, Question,
                      Settings, Template, TemplateVersion)
from . import definitions as d
from . import facts
from .definitions import BUCKETS, FUNNEL, Defs, Filters

C = Candidate
F = MetricsFact

# A/B: a winner is named only with p below this and at least this many delivered per variant.
SIGNIFICANCE = 0.05
MIN_SAMPLE = 100
Z95 = 1.959963984540054
Z_POWER80 = 0.8416212335729143


def dialect_of(session: Session) -> str:
    """The database's dialect name ("sqlite" or "postgresql")."""
    return session.get_bind().dialect.name


def defs_for(session: Session, seconds: float | None = None) -> Defs:
    """The definitions for this database and the send window set now, once the candidates'
    ``metrics_fact`` rows are fresh (recomputed first; for at most about ``seconds``, then
    ``Defs.waiting`` says how many are not). Every figure reads those rows."""
    waiting = 0 if facts.refresh(session, seconds=seconds) else facts.stale_count(session)
    settings = session.get(Settings, 1)
    window = (settings.window_start_minute, settings.window_end_minute) if settings else (540, 1080)
    return Defs(dialect_of(session), window, waiting)


def _sum(cond):
    return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)


rate = d.rate_of


# --- counts ---------------------------------------------------------------------------------

ALL_WHOS = tuple(d.WHO_LABELS)[:-2]  # every stage condition (not the drill-down-only ones)
INT_DIMENSIONS = ("agent", "followups", "heat", "bucket")


def _fact_dimension(name: str):
    """The SQL value of a by-table's dimension on a ``metrics_fact`` row (drill-downs)."""
    if name == "src":
        return case((F.source == "share_link", func.coalesce(F.source_detail, "")))
    return {"source": F.source, "channel": F.channel, "agent": F.agent_id, "device": F.device,
            "followups": F.followups, "heat": F.heat, "bucket": F.bucket, "variant": F.variant}[name]


# What ``counts_many`` groups ``metrics_fact`` rows by: the leading columns of a covering
# index (``models._FACT_GROUPINGS``), so SQLite groups in index order, one pass per grouping.
# A by-table reads the grouping that holds its dimension (``_GROUPING_OF``) and adds its rows
# up per value in Python: "source" and "src" share one pass (source, tag); channel, agent,
# role level (from the agents), device and follow-ups share another, whose combinations are
# few (about 3,500 rows with the fact bits at 100,000 candidates, against five passes over
# every candidate). The overall funnel is added up from the weekday × hour rows (whose hour
# tells whether the invite was outside the window).
_GROUP_COLUMNS = {"src": (F.source, F.source_detail), "mix": (F.channel, F.agent_id, F.device, F.followups),
                  "heat": (F.heat,), "bucket": (F.bucket,), "variant": (F.variant,)}
_GROUPING_OF = {None: ("heat", 0), "heat": ("heat", 0), "source": ("src", 0), "src": ("src", 1),
                "channel": ("mix", 0), "agent": ("mix", 1), "level": ("mix", 1), "device": ("mix", 2),
                "followups": ("mix", 3), "bucket": ("bucket", 0), "variant": ("variant", 0)}
_KEYS = max(len(columns) for columns in _GROUP_COLUMNS.values())


@lru_cache(maxsize=4096)
def _who_indexes(bits: int) -> tuple[int, ...]:
    """The places in ``ALL_WHOS`` of the who-counts a candidate with these fact bits is in."""
    mask = d.who_mask(bits, ALL_WHOS)
    return tuple(i for i in range(len(ALL_WHOS)) if mask >> i & 1)


def counts_many(session: Session, defs: Defs, f: Filters, specs: dict[str, str | None]) -> dict:
    """Every who-count per value of each spec's dimension (None: overall).

    Reads the cohort's ``metrics_fact`` rows (refreshed first), one grouped read per
    grouping, each over its covering index: candidates per (values, fact bits).
    Python turns each distinct set of fact bits into the who-counts it belongs to
    (``definitions.who_mask``, the one ``stage_conditions``) and adds up the few thousand rows.
    "outside_window" is counted overall and per weekday × hour only (it needs the hour).
    Returns {spec: {key: {who: n}}}.
    """
    cohort = d.fact_cohort(f)
    groupings = {_GROUPING_OF[by][0] for by in specs.values()}
    parts = []
    for name in sorted(groupings):
        columns = _GROUP_COLUMNS[name]
        keys = [cast(c, String).label(f"k{i}") for i, c in enumerate(columns)]
        keys += [cast(literal(None), String).label(f"k{i}") for i in range(len(keys), _KEYS)]
        # Rows without a value count only in a by-table that skips them: not read at all.
        valued = [columns[0].is_not(None)] if name in ("bucket", "variant") else []
        parts.append(select(literal(name).label("grouping"), *keys, F.flags, func.count().label("n"))
                     .where(*cohort, *valued).group_by(*columns, F.flags))
    rows = session.execute(union_all(*parts) if len(parts) > 1 else parts[0]).all()
    levels = {}
    if "level" in specs.values():
        levels = {str(k): v for k, v in session.execute(select(Agent.id, Agent.role_level)).all()}
    # Rows of the same value and fact bits are added up first (the overall funnel reads the
    # weekday × hour rows, thousands of them, but only a few hundred distinct sets of bits),
    # then each distinct set of bits is turned into the who-counts it belongs to, once.
    # (Rows unpacked as tuples: thousands of them, and a Row's attribute access costs more.)
    outside = {str(hour) for hour in range(7 * 24) if d.outside_window(hour % 24, defs.window)}
    grouped: dict[str, list] = {}
    for grouping, *values, flags, n in rows:
        bits = int(flags)
        if grouping == "heat" and values[0] in outside:
            bits |= d.OUTSIDE_BIT
        grouped.setdefault(grouping, []).append((values, bits, int(n)))
    # Each (grouping, column) is added up once per value: {value: {bits: n}} (the agent and
    # role-level tables share one, as do the funnel and the heat map); a share-link tag only
    # counts share-link candidates.
    per_value: dict[tuple, dict] = {}

    def values_of(grouping: str, at: int) -> dict:
        found = per_value.get((grouping, at))
        if found is None:
            found = per_value[(grouping, at)] = {}
            tags_only = grouping == "src" and at == 1
            for values, bits, n in grouped.get(grouping, ()):
                if tags_only and values[0] != "share_link":
                    continue
                by_bits = found.get(values[at])
                if by_bits is None:
                    by_bits = found[values[at]] = {}
                by_bits[bits] = by_bits.get(bits, 0) + n
        return found

    out: dict = {}
    for spec, by in specs.items():
        per_key: dict = {None: {}} if by is None else {}
        for value, by_bits in values_of(*_GROUPING_OF[by]).items():
            if by is None:
                key = None
            elif by == "src":
                key = value or ""
            elif value is None:
                continue  # no value for this dimension (e.g. the hour of someone never invited)
            elif by == "level":
                key = levels.get(value)
                if key is None:
                    continue
            else:
                key = int(value) if by in INT_DIMENSIONS else value
            into = per_key.get(key)
            if into is None:
                per_key[key] = dict(by_bits)
            else:
                for bits, n in by_bits.items():
                    into[bits] = into.get(bits, 0) + n
        found: dict = {}
        for key, by_bits in per_key.items():
            totals = [0] * len(ALL_WHOS)
            for bits, n in by_bits.items():
                for i in _who_indexes(bits):
                    totals[i] += n
            found[key] = dict(zip(ALL_WHOS, totals))
        out[spec] = found
    return out


def counts(session: Session, defs: Defs, f: Filters, whos: Iterable[str], by: str | None = None) -> dict:
    """How many candidates meet each of ``whos``, overall or per value of dimension ``by``."""
    whos = list(whos)
    found = counts_many(session, defs, f, {"x": by})["x"]
    if by is None:
        row = found.get(None) or {}
        return {w: row.get(w, 0) for w in whos}
    return {key: {w: row[w] for w in whos} for key, row in found.items()}


def agent_funnels(session: Session, agent_ids: list[int]) -> dict[int, dict]:
    """Each agent's all-time funnel (the Metrics page's definitions) and completion rate.

    One grouped read of the maintained counts (``candidates.tally``: per agent, invited or
    not, how far each candidate got and whether an invite failed, erased candidates too, as
    on the Metrics page), never a scan of the candidates or their events: a few rows per
    agent at any size. Same counts as ``counts``, shaped by the same ``funnel_figures``.
    """
    if not agent_ids:
        return {}
    found = tally.funnel_from_rows(session.execute(tally.funnel_select(agent_ids)).all(), agent_ids)
    return {agent_id: d.funnel_figures(found[agent_id]) for agent_id in agent_ids}


@dataclass
class Step:
    """One funnel step: its count, the rate from the previous step and of the base (delivered + link-only)."""

    who: str
    label: str
    count: int
    step_rate: float | None
    overall: float | None


def funnel(session: Session, defs: Defs, f: Filters, found: dict | None = None) -> dict:
    """The funnel and what is counted beside it (expired, opted out, failed, machine opens)."""
    beside = ("link_only", "failed", "expired", "opted_out", "machine_opened", "machine_opened_only",
              "visited_only", "never_started", "not_finished", "opened_not_clicked", "clicked_not_started",
              "late_invite", "friday_invite", "outside_window")
    if found is None:
        found = counts(session, defs, f, FUNNEL + beside)
    figures = d.funnel_figures(found)
    steps, previous = [], None
    for who in FUNNEL:
        n = found[who]
        # Link-only candidates join at "clicked": that step is measured against those who
        # opened an invite plus them, so no step rate can pass 100 %.
        entering = previous + found["link_only"] if who == "clicked" else previous
        steps.append(Step(who, d.WHO_LABELS[who], n,
                          rate(n, entering) if previous is not None else None,
                          rate(n, figures["reached"]) if who != "invited" else None))
        previous = n
    return {"steps": steps, "counts": found, "reached": figures["reached"], "completion": figures["completion"]}


# --- time -----------------------------------------------------------------------------------

TIME_STEPS = (("invite_click", "Invite → click", "invited_at", "clicked_at"),
              ("click_start", "Click → start", "clicked_at", "started_at"),
              ("start_complete", "Start → complete", "started_at", "completed_at"),
              ("invite_complete", "Invite → complete", "invited_at", "completed_at"))


STEP_KEYS = tuple(step[0] for step in TIME_STEPS)
STEP_LABELS = {step[0]: step[1] for step in TIME_STEPS}
# Drill-downs from the deliverability tables: candidates with at least one such message.
MESSAGE_WHOS = {"message_any": "messages", "message_sent": "sent", "message_temporary": "temporary"}


def times(session: Session, defs: Defs, f: Filters, histogram: dict | None = None,
          counts: dict | None = None) -> dict:
    """Median and p90 of each step (seconds), and the histogram of invite → complete.

    ``counts``: how many candidates have each step, when the caller has read them (``fact_sums``).
    """
    # The step durations are kept per candidate (``metrics_fact``, NULL where a step did not
    # happen; a share-link sign-up's click → start, one form post, is not kept). Each step
    # has an index in its order: how many, then the value at each rank, read from it (the
    # filters never choose another index: ``seek=False``).
    cohort = d.fact_cohort(f, seek=False)
    steps = []
    for key, label, _, _ in TIME_STEPS:
        column = F.__table__.c[key]
        n = counts[key] if counts is not None else session.scalar(
            select(func.count()).select_from(F).where(*cohort, column.is_not(None)))
        ordered = select(column).where(*cohort, column.is_not(None)).limit(1)
        median = session.scalar(ordered.order_by(column).offset((n + 1) // 2 - 1)) if n else None
        # (read from the top end: the index is walked up to the rank, a tenth of it instead of nine)
        p90 = session.scalar(ordered.order_by(column.desc()).offset(n - (9 * n + 9) // 10)) if n else None
        steps.append({"key": key, "label": label, "n": n, "median": None if median is None else float(median),
                      "p90": None if p90 is None else float(p90)})
    if histogram is None:
        histogram = counts(session, defs, f, ["completed"], by="bucket")
    bars = [{"key": i, "label": label, "count": histogram.get(i, {}).get("completed", 0)}
            for i, (_, label) in enumerate(BUCKETS)]
    return {"steps": steps, "histogram": bars}


# --- inside the interview -------------------------------------------------------------------

def questions(session: Session, defs: Defs, f: Filters) -> dict:
    """Per question: reached, answered, left there, median time spent; the biggest drop."""
    # The starters are counted per agent, answers given and fact bits (in the order of their
    # covering index, so without a sort), then joined to every question.
    cohort = d.fact_cohort(f)
    started = (select(F.agent_id.label("agent_id"), F.answers.label("k"), F.flags.label("flags"),
                      func.count().label("n"))
               .where(*cohort, d.fact_has("started")).group_by(F.agent_id, F.answers, F.flags)
               .cte("metrics_started").prefix_with("MATERIALIZED"))
    k, pos, n = started.c.k, Question.position, started.c.n
    done = started.c.flags.op("&")(1 << d.FACT_BITS.index("completed")) != 0

    def _n(cond):
        return func.coalesce(func.sum(case((cond, n), else_=0)), 0)

    rows = session.execute(
        select(Question.agent_id, Question.position, Question.text,
               _n(k >= pos - 1).label("reached"), _n(k >= pos).label("answered"),
               _n((k == pos - 1) & ~done).label("left"))
        .join(started, started.c.agent_id == Question.agent_id)
        .group_by(Question.agent_id, Question.position, Question.text)
        .order_by(Question.agent_id, Question.position)).all()
    # Time spent on a question (from the previous answer, or the start, to this answer) is
    # kept per answer in ``metrics_answer``, indexed by question and time: how many, then the
    # value at the median's rank, read from the index.
    A = MetricsAnswer
    answered = d.fact_cohort(f, A)
    medians = {}
    for agent_id, position, total in session.execute(
            select(A.agent_id, A.position, func.count()).where(*answered).group_by(A.agent_id, A.position)).all():
        medians[(agent_id, position)] = float(session.scalar(
            select(A.spent).where(A.agent_id == agent_id, A.position == position, *answered)
            .order_by(A.spent).offset((total + 1) // 2 - 1).limit(1)))
    titles = dict(session.execute(select(Agent.id, Agent.title).where(Agent.id.in_({r.agent_id for r in rows}))).all())
    table = [{"agent_id": r.agent_id, "agent": titles.get(r.agent_id, ""), "position": r.position, "text": r.text,
              "reached": int(r.reached), "answered": int(r.answered), "left": int(r.left),
              "median": medians.get((r.agent_id, r.position))} for r in rows]
    worst = max((q for q in table if q["left"]), key=lambda q: (q["left"], -q["position"]), default=None)
    return {"rows": table, "worst": worst}


# --- completion by ----------------------------------------------------------------------------

BY = ("source", "src", "channel", "agent", "level", "device", "followups")


def by_dimension(session: Session, defs: Defs, f: Filters, name: str, found: dict | None = None) -> list[dict]:
    """Delivered, link-only, started, completed and the completion rate per value of one dimension."""
    if found is None:
        found = counts(session, defs, f, ("invited", "delivered", "link_only", "started", "completed"),
                       by=name)
    labels = {}
    if name == "agent":
        labels = dict(session.execute(select(Agent.id, Agent.title).where(Agent.id.in_(list(found)))).all())
    rows = []
    for key, row in found.items():
        label = labels.get(key, key)
        if name == "device":
            label = d.DEVICE_LABELS.get(key, key)
        elif name == "followups":
            label = "3 or more" if key == 3 else str(key)
        elif name == "src" and key == "":
            label = "(no tag)"
        rows.append(dict(d.funnel_figures(row), key=key, label=str(label),
                         start_completion=rate(row["completed"], row["started"])))
    rows.sort(key=lambda r: (str(type(r["key"])), r["key"] if r["key"] is not None else ""))
    return rows


def heat_map(session: Session, defs: Defs, f: Filters, found: dict | None = None) -> dict:
    """Invites and completion by candidate-local weekday × hour of the invite."""
    if found is None:
        found = counts(session, defs, f, ("invited", "delivered", "link_only", "completed"), by="heat")
    cells = {}
    for key, row in found.items():
        cells[int(key)] = d.funnel_figures(row)
    return {"cells": cells}


# --- deliverability -------------------------------------------------------------------------

FAILED_PERMANENTLY = Message.status == MessageStatus.FAILED


def fact_sums(session: Session, f: Filters) -> list:
    """The cohort's message counts per recipient domain (``facts.DELIVERY_COLUMNS``) and how
    many of them have each step's duration (``TIME_STEPS``), in one read of
    ``ix_metrics_fact_delivery``: rows of (domain, *sums, *step counts)."""
    column = F.__table__.c
    sums = [func.coalesce(func.sum(column[name]), 0).label(name) for name in facts.DELIVERY_COLUMNS]
    steps = [func.count(column[key]).label(key) for key, _, _, _ in TIME_STEPS]
    # (seek=False: the filters never pick another index, whose rows would then be read in the table)
    return session.execute(select(F.email_domain, *sums, *steps).where(*d.fact_cohort(f, seek=False))
                           .group_by(F.email_domain)).all()


def step_counts(rows: list) -> dict:
    """How many candidates have each step's duration, from ``fact_sums`` rows."""
    first = 1 + len(facts.DELIVERY_COLUMNS)
    return {key: sum(int(row[first + i]) for row in rows) for i, (key, _, _, _) in enumerate(TIME_STEPS)}


def deliverability(session: Session, defs: Defs, f: Filters, rows: list | None = None) -> dict:
    """Sent, failed permanently and temporarily, per channel and per recipient domain (e-mail).

    Messages meant to go (not cancelled or suppressed) of the page's candidates: the date
    range is the candidates' (invited in the range), as everywhere on the page, never the
    messages' own dates. Each candidate's messages are counted in their ``metrics_fact`` row
    per channel, so this is one read of their narrow index (``ix_metrics_fact_delivery``),
    grouped by recipient domain in its order; the channels' totals are the domains' sums.
    """
    if rows is None:
        rows = fact_sums(session, f)
    totals = dict.fromkeys(facts.DELIVERY_COLUMNS, 0)
    for row in rows:
        for name, value in zip(facts.DELIVERY_COLUMNS, row[1:]):
            totals[name] += int(value)
    channels = [{"key": channel, **{figure: totals[f"{channel}_{figure}"] for figure in facts.MESSAGE_FIGURES}}
                for channel in facts.MESSAGE_CHANNELS]
    at = {name: i + 1 for i, name in enumerate(facts.DELIVERY_COLUMNS)}
    busiest = sorted((row for row in rows if row[at["email_messages"]]),
                     key=lambda row: (-row[at["email_messages"]], row[0] or ""))[:25]
    domains = [{"key": row[0], **{figure: row[at[f"email_{figure}"]] for figure in facts.MESSAGE_FIGURES}}
               for row in busiest]

    def shape(rows):
        return [{"key": r["key"], "messages": int(r["messages"]), "sent": int(r["sent"]), "failed": int(r["failed"]),
                 "temporary": int(r["temporary"]), "failure_rate": rate(int(r["failed"]), int(r["messages"]))}
                for r in rows if r["messages"]]

    return {"channels": shape(channels), "domains": shape(domains)}


def message_failed_condition(channel: str | None, domain: str | None):
    """``metrics_fact`` rows of candidates with a permanently failed message (to ``channel`` / ``domain``)."""
    # The caller keeps the page's candidates (``d.fact_cohort``); here only the message's own facts.
    conds = [Message.candidate_id == F.candidate_id, FAILED_PERMANENTLY]
    if channel:
        conds.append(Message.channel == channel)
    if domain:
        conds += [Message.channel == "email", F.email_domain == domain]
    return exists().where(*conds)


# --- A/B results ----------------------------------------------------------------------------

@dataclass
class Comparison:
    """A variant against the first one, on completion (of delivered)."""

    diff: float | None
    low: float | None
    high: float | None
    p_value: float | None
    verdict: str
    winner: bool = False


def compare(n1: int, x1: int, n2: int, x2: int) -> Comparison:
    """Two-proportion z-test (pooled) and the 95 % interval of p2 − p1 (unpooled)."""
    if not n1 or not n2:
        return Comparison(None, None, None, None, "no invites delivered yet")
    p1, p2 = x1 / n1, x2 / n2
    diff = p2 - p1
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    pooled = (x1 + x2) / (n1 + n2)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    p_value = math.erfc(abs(diff) / se0 / math.sqrt(2)) if se0 else 1.0
    low, high = diff - Z95 * se, diff + Z95 * se
    if p_value < SIGNIFICANCE and min(n1, n2) >= MIN_SAMPLE:
        return Comparison(diff, low, high, p_value, "significant", winner=True)
    if diff == 0:
        verdict = "not yet significant — no difference so far"
    else:
        # Invites per variant for an 80 % chance to see this difference at the 5 % level.
        need = (Z95 + Z_POWER80) ** 2 * (p1 * (1 - p1) + p2 * (1 - p2)) / diff ** 2
        more = max(0, math.ceil(need) - min(n1, n2), MIN_SAMPLE - min(n1, n2))
        verdict = f"not yet significant — about {2 * more:,} more invites needed"
    return Comparison(diff, low, high, p_value, verdict)


def ab_results(session: Session, defs: Defs, f: Filters, found: dict | None = None) -> list[dict]:
    """Per invite channel with several variants: each variant's funnel and its comparison."""
    whos = ("invited", "delivered", "opened", "clicked", "started", "completed", "opted_out")
    if found is None:
        found = counts(session, defs, f, whos, by="variant")
    templates = session.execute(select(Template.id, Template.channel, Template.variant, Template.active)
                                .where(Template.kind == "invite")).all()
    by_channel: dict[str, list] = {}
    for key, row in found.items():
        if key is None:
            continue
        channel, variant = key.split("/", 1)
        by_channel.setdefault(channel, []).append(dict(row, variant=variant))
    out = []
    for channel in sorted(by_channel):
        variants = sorted(by_channel[channel], key=lambda r: r["variant"])
        if len(variants) < 2:
            continue
        first = variants[0]
        for v in variants:
            v["completion"] = rate(v["completed"], v["delivered"])
            v["click_rate"] = rate(v["clicked"], v["delivered"])
            v["template_id"] = next((t.id for t in templates if t.channel == channel and t.variant == v["variant"]), None)
            v["active"] = next((t.active for t in templates if t.channel == channel and t.variant == v["variant"]), None)
            v["comparison"] = None if v is first else compare(first["delivered"], first["completed"],
                                                               v["delivered"], v["completed"])
        winner = None
        best = max(variants, key=lambda v: (v["completion"] or 0))
        if best is first:
            # The first variant wins only if every other one is significantly worse.
            if all(v["comparison"].winner and v["comparison"].diff < 0 for v in variants[1:]):
                winner = first
        elif best["comparison"].winner and best["comparison"].diff > 0:
            winner = best
        out.append({"channel": channel, "variants": variants, "winner": winner})
    return out


def make_only_variant(session: Session, template: Template) -> int:
    """Make ``template`` the only active variant of its kind and channel; return how many were switched off."""
    result = session.execute(update(Template).where(Template.kind == template.kind,
                                                    Template.channel == template.channel,
                                                    Template.id != template.id, Template.active.is_(True))
                             .values(active=False).execution_options(synchronize_session=False))
    template.active = True
    return result.rowcount


# --- red flags ------------------------------------------------------------------------------

@dataclass
class Flag:
    """A problem found in the data: what was measured, the threshold, who, and the fix."""

    key: str
    title: str
    measured: str
    threshold: str
    who: str
    fix: str
    dim: str | None = None
    value: object = None
    count: int = 0
    template: dict | None = None  # {kind, channel, variant}: the template the flag is about


LOW_OPEN_RATE = 0.20          # opened / delivered, e-mail, with at least MIN_FLAG_BASE delivered
LOW_COMPLETION_OF_STARTED = 0.60
HIGH_START_OF_CLICKED = 0.50  # "high start": at least half of those who click start
LOW_START_OF_CLICKED = 0.50   # clicks without starts: fewer than half start
DOMAIN_FAILURE_RATE = 0.20
MIN_DOMAIN_MESSAGES = 10
FRIDAY_SHARE = 0.20
OUTSIDE_WINDOW_SHARE = 0.20
LATE_INVITE_SHARE = 0.25
PHONE_GAP = 0.15              # phone completion (of started) this far below desktop
MIN_FLAG_BASE = 20
# Opt-out spike after a template change: at least this many sends on each side of the change,
# and the rate after at least SPIKE_FACTOR times the rate before and at least SPIKE_MIN_RATE.
SPIKE_MIN_SENDS = 30
SPIKE_FACTOR = 2.0
SPIKE_MIN_RATE = 0.02
# An opt-out counts against the last message sent on its channel before it, within this time.
OPT_OUT_DAYS = 7


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.0f} %"


def _opted_out_after(dialect: str, m):
    """SQL: the candidate opted out of message ``m``'s channel after it, before any later
    message on that channel and within OPT_OUT_DAYS (the message the opt-out answered)."""
    later = aliased(Message)
    return exists().where(
        Event.candidate_id == m.candidate_id, Event.type == "opted_out", Event.channel == m.channel,
        Event.at >= m.sent_at, d.seconds_between(dialect, m.sent_at, Event.at) < OPT_OUT_DAYS * 86400,
        ~exists().where(later.candidate_id == m.candidate_id, later.channel == m.channel,
                        later.sent_at > m.sent_at, later.sent_at <= Event.at))


def _template_changes():
    """Per kind and channel, the last change of its texts: the newest saved version of any of
    its variants (an edit, a restore or a new variant), when there is more than the first."""
    return (select(Template.kind.label("kind"), Template.channel.label("channel"),
                   func.max(TemplateVersion.created_at).label("changed_at"))
            .join(TemplateVersion, TemplateVersion.template_id == Template.id)
            .group_by(Template.kind, Template.channel).having(func.count(TemplateVersion.id) >= 2)
            .subquery("template_changes"))


def optout_rates(session: Session, defs: Defs, f: Filters) -> list[dict]:
    """Per template (kind and channel) that changed: messages sent to the page's candidates
    before and after its last change, and how many of each an opt-out answered."""
    changes = _template_changes()
    if session.scalar(select(func.count()).select_from(changes)) == 0:
        return []  # no template was changed: nothing to compare (and no message to read)
    m = aliased(Message)
    after = m.sent_at >= changes.c.changed_at
    keys = (changes.c.kind, changes.c.channel, changes.c.changed_at)
    sent = (select(*keys).select_from(m).join(TemplateVersion, TemplateVersion.id == m.template_version_id)
            .join(Template, Template.id == TemplateVersion.template_id)
            .join(changes, and_(changes.c.kind == Template.kind, changes.c.channel == Template.channel))
            .join(F, F.candidate_id == m.candidate_id)
            .where(m.sent_at.is_not(None), *d.fact_cohort(f, seek=False),
                   # (the changed templates' versions first: one pass over the messages checks a short list)
                   m.template_version_id.in_(
                       select(TemplateVersion.id).join(Template, Template.id == TemplateVersion.template_id)
                       .join(changes, and_(changes.c.kind == Template.kind, changes.c.channel == Template.channel))))
            .group_by(*keys).order_by(*keys))
    rows = session.execute(sent.add_columns(_sum(~after).label("before"), _sum(after).label("after"))).all()
    # The opt-outs are few: each one's message (the last sent on its channel before it, within
    # OPT_OUT_DAYS) is found from the opt-out, rather than an opt-out looked for after every send.
    later = aliased(Message)
    answered = {tuple(r[:3]): r for r in session.execute(
        sent.join(Event, and_(Event.candidate_id == m.candidate_id, Event.type == "opted_out",
                              Event.channel == m.channel, Event.at >= m.sent_at,
                              d.seconds_between(defs.dialect, m.sent_at, Event.at) < OPT_OUT_DAYS * 86400,
                              ~exists().where(later.candidate_id == m.candidate_id, later.channel == m.channel,
                                              later.sent_at > m.sent_at, later.sent_at <= Event.at)))
        .add_columns(func.count(distinct(case((~after, m.id)))).label("before_out"),
                     func.count(distinct(case((after, m.id)))).label("after_out"))).all()}
    none = {"before_out": 0, "after_out": 0}
    rows = [dict(r._asdict(), **{k: getattr(answered[tuple(r[:3])], k) if tuple(r[:3]) in answered else none[k]
                                 for k in none}) for r in rows]
    out = []
    for r in rows:
        before, after_n, before_out, after_out = (int(r[k]) for k in ("before", "after", "before_out", "after_out"))
        out.append({"kind": r["kind"], "channel": r["channel"], "changed_at": r["changed_at"], "before": before,
                    "before_out": before_out, "after": after_n, "after_out": after_out,
                    "before_rate": rate(before_out, before), "after_rate": rate(after_out, after_n)})
    return out


def is_optout_spike(row: dict) -> bool:
    """The spike rule: enough sends on both sides, and the rate after is SPIKE_FACTOR times the
    rate before and at least SPIKE_MIN_RATE."""
    return (row["before"] >= SPIKE_MIN_SENDS and row["after"] >= SPIKE_MIN_SENDS
            and row["after_rate"] >= SPIKE_MIN_RATE and row["after_rate"] >= SPIKE_FACTOR * row["before_rate"])


def changed_variant(session: Session, kind: str, channel: str) -> str:
    """The variant of this kind and channel whose text changed last (the one to look at)."""
    return session.scalar(select(Template.variant).join(TemplateVersion, TemplateVersion.template_id == Template.id)
                          .where(Template.kind == kind, Template.channel == channel)
                          .order_by(TemplateVersion.created_at.desc(), TemplateVersion.id.desc()).limit(1)) or "A"


def optout_spike_condition(session: Session, defs: Defs, raw: str | None):
    """Candidates who opted out in answer to a message of template ``kind/channel`` sent after
    its last change (the people behind an opt-out spike flag); None if unknown."""
    kind, _, channel = (raw or "").partition("/")
    changes = _template_changes()
    changed_at = session.scalar(select(changes.c.changed_at).where(changes.c.kind == kind,
                                                                   changes.c.channel == channel))
    if changed_at is None:
        return None
    m = aliased(Message)
    return exists().where(
        m.candidate_id == C.id, m.sent_at >= changed_at, TemplateVersion.id == m.template_version_id,
        Template.id == TemplateVersion.template_id, Template.kind == kind, Template.channel == channel,
        _opted_out_after(defs.dialect, m))


def red_flags(funnel_: dict, question_: dict, delivery: dict, devices: list[dict], email_funnel: dict,
              min_base: int = MIN_FLAG_BASE, optouts: Iterable[dict] = (),
              variants: dict[tuple[str, str], str] | None = None) -> list[Flag]:
    """The red flags the figures raise, each with its threshold and the best-practice fix.

    ``optouts``: ``optout_rates`` rows; ``variants``: (kind, channel) → the variant to link to.
    """
    c = funnel_["counts"]
    flags = []
    for row in optouts:
        if not is_optout_spike(row):
            continue
        name = f"{row['kind']} ({CHANNEL_NAMES.get(row['channel'], row['channel'])})"
        flags.append(Flag(f"optout_{row['kind']}_{row['channel']}", f"Opt-outs rose after the {name} template changed",
                          f"{_pct(row['after_rate'])} of {row['after']} messages sent since the change on "
                          f"{row['changed_at']:%Y-%m-%d} were answered by an opt-out, against "
                          f"{_pct(row['before_rate'])} of {row['before']} before it",
                          f"at least {SPIKE_MIN_SENDS} sends on each side, and {SPIKE_FACTOR:.0f}× the rate before "
                          f"and {_pct(SPIKE_MIN_RATE)} or more; an opt-out counts against the last message sent on its "
                          f"channel in the {OPT_OUT_DAYS} days before it", "optout_spike",
                          "Read the last change of the template: a pushier tone, a missing reason for the message or "
                          "a changed sender makes people opt out. Restore the earlier version or soften the text.",
                          value=f"{row['kind']}/{row['channel']}", count=row["after_out"],
                          template={"kind": row["kind"], "channel": row["channel"],
                                    "variant": (variants or {}).get((row["kind"], row["channel"]), "A")}))
    e_delivered, e_opened = email_funnel["delivered"], email_funnel["opened"]
    if e_delivered >= min_base and rate(e_opened, e_delivered) < LOW_OPEN_RATE:
        flags.append(Flag("low_open", "Low open rate", f"{_pct(rate(e_opened, e_delivered))} of "
                          f"{e_delivered} delivered e-mails opened (approximate)", f"below {_pct(LOW_OPEN_RATE)}",
                          "never_started", "Check spam filters and subject lines; ask IT to whitelist the sender.",
                          dim="channel", value="email", count=e_delivered - e_opened))
    started, completed, clicked = c["started"], c["completed"], c["clicked"]
    if (started >= min_base and rate(started, clicked) >= HIGH_START_OF_CLICKED
            and rate(completed, started) < LOW_COMPLETION_OF_STARTED):
        worst = question_.get("worst")
        where = f" Most leave at question {worst['position']} of {worst['agent']}: “{worst['text'][:80]}”." if worst else ""
        flags.append(Flag("low_completion", "Many start but do not finish",
                          f"{_pct(rate(completed, started))} of {started} who started completed",
                          f"below {_pct(LOW_COMPLETION_OF_STARTED)}", "not_finished",
                          "The interview is probably too long: shorten or remove questions." + where,
                          count=started - completed))
    if clicked >= min_base and rate(started, clicked) < LOW_START_OF_CLICKED:
        flags.append(Flag("clicks_no_starts", "Clicks without starts",
                          f"{_pct(rate(started, clicked))} of {clicked} who clicked started",
                          f"below {_pct(LOW_START_OF_CLICKED)}", "clicked_not_started",
                          "Likely a technical problem: test the links and the page on a phone.",
                          count=clicked - started))
    for row in delivery["domains"]:
        if row["messages"] >= MIN_DOMAIN_MESSAGES and (row["failure_rate"] or 0) >= DOMAIN_FAILURE_RATE:
            flags.append(Flag(f"domain_{row['key']}", f"Failed sends to {row['key']}",
                              f"{row['failed']} of {row['messages']} e-mails to {row['key']} failed",
                              f"{_pct(DOMAIN_FAILURE_RATE)} or more of at least {MIN_DOMAIN_MESSAGES}",
                              "message_failed", "Check the bounce reasons in the outbox; ask that domain's IT "
                              "to whitelist the sender, and check SPF/DKIM.", dim="domain", value=row["key"],
                              count=row["failed"]))
    invited = c["invited"]
    if invited >= min_base and rate(c["friday_invite"], invited) >= FRIDAY_SHARE:
        flags.append(Flag("friday", "Many first invites on Fridays",
                          f"{_pct(rate(c['friday_invite'], invited))} of {invited} first invites went on a Friday "
                          "(candidate-local)", f"{_pct(FRIDAY_SHARE)} or more", "friday_invite",
                          "Send first invites Monday to Thursday (Settings → initial send days).",
                          count=c["friday_invite"]))
    if invited >= min_base and rate(c["outside_window"], invited) >= OUTSIDE_WINDOW_SHARE:
        flags.append(Flag("window", "First invites outside the send window",
                          f"{_pct(rate(c['outside_window'], invited))} of {invited} first invites went outside "
                          "the send window (candidate-local)", f"{_pct(OUTSIDE_WINDOW_SHARE)} or more",
                          "outside_window", "Keep the send window on (Settings) and avoid “Send now” at night.",
                          count=c["outside_window"]))
    if invited >= min_base and rate(c["late_invite"], invited) >= LATE_INVITE_SHARE:
        flags.append(Flag("late", "Invites sent long after the candidate was added",
                          f"{_pct(rate(c['late_invite'], invited))} of {invited} were invited more than "
                          f"{d.LATE_INVITE_HOURS} h after being added", f"{_pct(LATE_INVITE_SHARE)} or more",
                          "late_invite", "Send promptly: invite candidates the day they apply.",
                          count=c["late_invite"]))
    phone = next((r for r in devices if r["key"] == "mobile"), None)
    desktop = next((r for r in devices if r["key"] == "desktop"), None)
    if (phone and desktop and phone["started"] >= min_base and desktop["started"] >= min_base
            and phone["start_completion"] < desktop["start_completion"] - PHONE_GAP):
        flags.append(Flag("phone", "Completion on phones far below desktop",
                          f"{_pct(phone['start_completion'])} on phones against {_pct(desktop['start_completion'])} "
                          "on desktop (of those who started)", f"{_pct(PHONE_GAP)} points or more below",
                          "not_finished", "Improve the mobile experience: short questions, test the page on a phone.",
                          dim="device", value="mobile", count=phone["started"] - phone["completed"]))
    return flags


CHANNEL_NAMES = {"email": "e-mail", "sms": "SMS", "whatsapp": "WhatsApp"}


# --- the whole page -------------------------------------------------------------------------

# How long the page itself recomputes stale facts before it shows what is there.
REFRESH_SECONDS = 5.0


def page(session: Session, f: Filters) -> dict:
    """Every figure of the page for these filters."""
    # After an upgrade or a very large upload the background refresh may still be at work:
    # the page helps for a few seconds, then shows what is there and says how much is left.
    defs = defs_for(session, seconds=REFRESH_SECONDS)
    specs = {"funnel": None, **{f"by-{name}": name for name in BY}, "heat": "heat", "bucket": "bucket",
             "variant": "variant"}
    many = counts_many(session, defs, f, specs)
    funnel_ = funnel(session, defs, f, found=many["funnel"].get(None) or {w: 0 for w in ALL_WHOS})
    question_ = questions(session, defs, f)
    sums = fact_sums(session, f)
    delivery = deliverability(session, defs, f, rows=sums)
    by = {name: by_dimension(session, defs, f, name, found=many[f"by-{name}"]) for name in BY}
    email = many["by-channel"].get("email") or {"delivered": 0, "opened": 0}
    optouts = optout_rates(session, defs, f)
    variants = {(r["kind"], r["channel"]): changed_variant(session, r["kind"], r["channel"])
                for r in optouts if is_optout_spike(r)}
    return {
        "funnel": funnel_, "questions": question_,
        "times": times(session, defs, f, histogram=many["bucket"], counts=step_counts(sums)),
        "by": by, "heat": heat_map(session, defs, f, found=many["heat"]), "delivery": delivery,
        "ab": ab_results(session, defs, f, found=many["variant"]),
        "flags": red_flags(funnel_, question_, delivery, by["device"], email, optouts=optouts, variants=variants),
        "waiting": defs.waiting,
    }


# --- drill-down -----------------------------------------------------------------------------

def people_condition(session: Session, f: Filters, who: str, dim: str | None, raw: str | None):
    """The condition that picks exactly the candidates a figure counted; None if unknown.

    It reads the same ``metrics_fact`` rows, bits and dimensions the counts read, so a
    drill-down lists exactly the people behind the figure.
    """
    defs = defs_for(session, seconds=REFRESH_SECONDS)
    cohort = d.fact_cohort(f)

    def picked(*conds):
        return C.id.in_(select(F.candidate_id).where(*cohort, *conds))

    if who == "message_failed":
        channel = raw if dim == "channel" else None
        domain = raw if dim == "domain" else None
        if dim not in (None, "channel", "domain"):
            return None
        return picked(message_failed_condition(channel, domain))
    if who == "optout_spike":
        condition = optout_spike_condition(session, defs, raw)
        return None if condition is None else and_(picked(), condition)
    if who == "left_at":
        # raw is "agent_id:position": started, not completed, answered the questions before it only.
        try:
            agent_id, position = (int(x) for x in (raw or "").split(":"))
        except ValueError:
            return None
        return picked(d.fact_has("started"), not_(d.fact_has("completed")), F.agent_id == agent_id,
                      F.answers == position - 1)
    if who in ("reached", "answered"):
        # raw is "agent_id:position": starters who reached the question (answered the ones
        # before it) or answered it, as the per-question table counts them.
        try:
            agent_id, position = (int(x) for x in (raw or "").split(":"))
        except ValueError:
            return None
        return picked(d.fact_has("started"), F.agent_id == agent_id,
                      F.answers >= (position - 1 if who == "reached" else position))
    if who == "step_time":
        # The people a step's median and 90th percentile are of: that step's time is known.
        if dim != "step" or raw not in STEP_KEYS:
            return None
        return picked(F.__table__.c[raw].is_not(None))
    if who in MESSAGE_WHOS:
        # A deliverability figure counts messages; its people are those with such a message.
        figure = MESSAGE_WHOS[who]
        if dim == "channel" and raw in facts.MESSAGE_CHANNELS:
            return picked(F.__table__.c[f"{raw}_{figure}"] > 0)
        if dim == "domain" and raw:
            return picked(F.email_domain == raw, F.__table__.c[f"email_{figure}"] > 0)
        return None
    whos = d.fact_conditions(defs.window)
    if who not in whos:
        return None
    conds = [whos[who]]
    if dim:
        if dim not in d.DIMENSIONS or dim == "question":
            return None
        value = defs.dimension_value(dim, raw or "")
        if value is None:
            return None
        if dim == "level":
            conds.append(F.agent_id.in_(select(Agent.id).where(Agent.role_level == value)))
        else:
            if dim == "src":
                conds.append(F.source == "share_link")
            conds.append(_fact_dimension(dim) == value)
    return picked(*conds)


# --- CSV ------------------------------------------------------------------------------------

def to_csv(header: list[str], rows: Iterable[Iterable]) -> str:
    """One table as CSV text, every cell neutralised."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([csv_safe(h) for h in header])
    for row in rows:
        writer.writerow([csv_safe(v) for v in row])
    return buf.getvalue()


def _r(x):
    return "" if x is None else f"{x:.4f}"


def table_csv(figures: dict, table: str) -> tuple[list[str], list[list]] | None:
    """A table of the page as (header, rows) for CSV; None for an unknown table name."""
    if table == "funnel":
        rows = [[s.label, s.count, _r(s.step_rate), _r(s.overall)] for s in figures["funnel"]["steps"]]
        rows += [[d.WHO_LABELS[k], v, "", ""] for k, v in figures["funnel"]["counts"].items() if k not in FUNNEL]
        return ["stage", "candidates", "rate from previous step", "rate of delivered + link only"], rows
    if table == "times":
        return (["step", "candidates", "median (s)", "p90 (s)"],
                [[s["label"], s["n"], _r(s["median"]), _r(s["p90"])] for s in figures["times"]["steps"]])
    if table == "histogram":
        return ["time to complete", "completed"], [[b["label"], b["count"]] for b in figures["times"]["histogram"]]
    if table == "questions":
        return (["interview agent", "position", "question", "reached", "answered", "left here", "median time (s)"],
                [[q["agent"], q["position"], q["text"], q["reached"], q["answered"], q["left"], _r(q["median"])]
                 for q in figures["questions"]["rows"]])
    if table.startswith("by-") and table[3:] in figures["by"]:
        # "link only" last: the earlier columns keep their places for existing spreadsheets.
        return (["value", "invited", "delivered", "started", "completed", "completion rate", "link only"],
                [[r["label"], r["invited"], r["delivered"], r["started"], r["completed"], _r(r["completion"]),
                  r["link_only"]] for r in figures["by"][table[3:]]])
    if table == "heat":
        return (["weekday", "hour", "invited", "delivered", "completed", "completion rate"],
                [[WEEKDAYS[k // 24], k % 24, v["invited"], v["delivered"], v["completed"], _r(v["completion"])]
                 for k, v in sorted(figures["heat"]["cells"].items())])
    if table in ("channels", "domains"):
        return (["channel" if table == "channels" else "domain", "messages", "sent", "failed permanently",
                 "failed temporarily"],
                [[r["key"], r["messages"], r["sent"], r["failed"], r["temporary"]] for r in figures["delivery"][table]])
    if table == "ab":
        rows = []
        for test in figures["ab"]:
            for v in test["variants"]:
                cmp_ = v["comparison"]
                rows.append([test["channel"], v["variant"], v["invited"], v["delivered"], v["clicked"], v["started"],
                             v["completed"], v["opted_out"], _r(v["completion"]),
                             _r(cmp_.diff) if cmp_ else "", _r(cmp_.low) if cmp_ else "",
                             _r(cmp_.high) if cmp_ else "", _r(cmp_.p_value) if cmp_ else ""])
        return (["channel", "variant", "sent", "delivered", "clicked", "started", "completed", "opted out",
                 "completion rate", "difference", "95% CI low", "95% CI high", "p-value"], rows)
    if table == "flags":
        return (["flag", "measured", "threshold", "fix"],
                [[fl.title, fl.measured, fl.threshold, fl.fix] for fl in figures["flags"]])
    return None


WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
TABLES = ("funnel", "times", "histogram", "questions", "heat", "channels", "domains", "ab", "flags") + tuple(
    f"by-{name}" for name in BY)


def funnel_rows(steps: list[Step]) -> list[tuple]:
    """The funnel chart's bars: (label, count, largest count)."""
    top = max((s.count for s in steps), default=0)
    return [(s.label.capitalize(), s.count, top) for s in steps]


def rate_rows(rows: list[dict]) -> list[tuple]:
    """A by-table's chart bars: (label, completion %, 100)."""
    return [(r["label"], round((r["completion"] or 0) * 100), 100) for r in rows]


def histogram_rows(bars: list[dict]) -> list[tuple]:
    """The histogram's bars: (label, count)."""
    return [(b["label"], b["count"]) for b in bars]


def duration(seconds: float | None) -> str:
    """A duration for people: 45 s, 12 min, 3.5 h, 2.1 days."""
    if seconds is None:
        return "—"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


