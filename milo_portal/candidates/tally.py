"""Candidate counts that are maintained, not recounted: per agent, stage, source and channel.

Database triggers on ``candidate`` append a +1/-1 row to ``candidate_count`` in the same
transaction as every insert, stage change, channel change, erasure and delete (migration
0006_fast_candidate_lists), so the counts cannot drift whichever code writes a candidate,
and a rolled-back change rolls its count back with it. Readers sum the rows; ``fold``
replaces the appended rows by one row per key, so a read stays a sum over a few hundred rows
however many candidates there are.

``agent_funnel_count`` is kept the same way (migration 0016_agent_tally): per agent, whether
an invite went out, how far the candidate got (clicked, started, completed) and whether an
invite failed (0021_agent_failed_invites), erased candidates included, for the agents'
funnels. ``fold`` and ``pending`` cover both tables.
"""
from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from ..models import AgentFunnelCount, CandidateCount, Stage
from ..transactions import write_unit

# Fold once this many appended rows wait: a read sums at most this many beyond one row per key.
FOLD_AFTER = 2000

_KEY = "agent_id, stage, source, channel"
# Each maintained table and the columns its rows are summed by.
_TABLES = {"candidate_count": _KEY, "agent_funnel_count": "agent_id, invited, reached, failed"}
# ``AgentFunnelCount.reached``: how far a candidate got.
CLICKED, STARTED, COMPLETED = 1, 2, 3


def count(session: Session, agent_id: int | None = None, stage: str | None = None,
          source: str | None = None, channel: str | None = None) -> int:
    """How many candidates (not erased) match these filters; None means any."""
    query = select(func.coalesce(func.sum(CandidateCount.n), 0))
    for column, value in ((CandidateCount.agent_id, agent_id), (CandidateCount.stage, stage),
                          (CandidateCount.source, source), (CandidateCount.channel, channel)):
        if value is not None:
            query = query.where(column == value)
    return int(session.scalar(query))


def by_agent_and_stage(session: Session, agent_ids: list[int]) -> dict[int, dict[str, int]]:
    """Candidates per stage for each of these agents (every stage present, zero if none)."""
    counts: dict[int, dict[str, int]] = {a: {s: 0 for s in Stage.ALL} for a in agent_ids}
    if not agent_ids:
        return counts
    rows = session.execute(
        select(CandidateCount.agent_id, CandidateCount.stage, func.sum(CandidateCount.n))
        .where(CandidateCount.agent_id.in_(agent_ids))
        .group_by(CandidateCount.agent_id, CandidateCount.stage)
    )
    for agent_id, stage, n in rows:
        counts[agent_id][stage] = int(n)
    return counts


def funnel_select(agent_ids: list[int]):
    """The statement reading these agents' maintained funnel rows: (agent_id, invited, reached, failed, n)."""
    key = (AgentFunnelCount.agent_id, AgentFunnelCount.invited, AgentFunnelCount.reached, AgentFunnelCount.failed)
    return (select(*key, func.sum(AgentFunnelCount.n).label("n"))
            .where(AgentFunnelCount.agent_id.in_(agent_ids)).group_by(*key))


def funnel_from_rows(rows, agent_ids: list[int]) -> dict[int, dict[str, int]]:
    """Each agent's invited, delivered, link-only, clicked, started and completed from
    ``funnel_select``'s rows.

    The stages reached, as the Metrics page defines them: a candidate who completed also
    clicked and started; link-only candidates (never invited) count from "clicked" on.
    Delivered is invited less those whose invite failed and who never clicked (a click
    proves the invite arrived).
    """
    counts = {a: {"invited": 0, "delivered": 0, "link_only": 0, "clicked": 0, "started": 0, "completed": 0}
              for a in agent_ids}
    for agent_id, invited, reached, failed, n in rows:
        found, n = counts[agent_id], int(n)
        if invited:
            found["invited"] += n
            if not (failed and reached < CLICKED):
                found["delivered"] += n
        elif reached >= CLICKED:
            found["link_only"] += n
        for stage, level in (("clicked", CLICKED), ("started", STARTED), ("completed", COMPLETED)):
            if reached >= level:
                found[stage] += n
    return counts


def funnel_by_agent(session: Session, agent_ids: list[int]) -> dict[int, dict[str, int]]:
    """Each agent's funnel stages (erased candidates too), from the maintained counts."""
    rows = session.execute(funnel_select(agent_ids)).all() if agent_ids else []
    return funnel_from_rows(rows, agent_ids)


def pending(session: Session) -> int:
    """How many appended rows wait to be folded (in both maintained tables; one query)."""
    waiting = [select(func.count()).where(model.folded.is_(False)).scalar_subquery()
               for model in (CandidateCount, AgentFunnelCount)]
    return int(session.scalar(select(waiting[0] + waiting[1])))


def fold(session: Session) -> None:
    """Replace every row of both tables by one sum per key (dropping zeros). The totals do not change.

    The caller commits. On PostgreSQL it is one statement per table, so rows that other transactions
    append meanwhile are either in both its DELETE and its sums or in neither, and two folds
    at once cannot count a row twice. On SQLite the caller's write unit holds the database's
    write lock (it begins IMMEDIATE), so nobody appends between the two statements.
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    for table, key in _TABLES.items():
        if postgres:
            session.execute(text(
                f"WITH gone AS (DELETE FROM {table} RETURNING {key}, n) "
                f"INSERT INTO {table} ({key}, n, folded) "
                f"SELECT {key}, sum(n), true FROM gone GROUP BY {key} HAVING sum(n) <> 0"))
            continue
        last = session.scalar(text(f"SELECT max(id) FROM {table}"))
        if last is None:
            continue
        session.execute(text(
            f"INSERT INTO {table} ({key}, n, folded) "
            f"SELECT {key}, sum(n), 1 FROM {table} WHERE id <= :last GROUP BY {key} HAVING sum(n) <> 0"),
            {"last": last})
        session.execute(text(f"DELETE FROM {table} WHERE id <= :last"), {"last": last})


def fold_if_due(session: Session) -> bool:
    """Fold when enough appended rows wait (decided by a count first); return whether it did.

    The list pages call it before reading counts: folding rewrites rows without changing a
    total, and is skipped (no write at all) until ``FOLD_AFTER`` changes have piled up. The
    fold is its own write unit, counted again inside it: the pages are GETs, whose read
    transaction SQLite cannot turn into a write once another request has written since it
    began ("database is locked" at once, no waiting), and another page may have folded first.
    """
    if pending(session) < FOLD_AFTER:
        return False
    with write_unit(session):
        if pending(session) < FOLD_AFTER:
            return False
        fold(session)
    return True
