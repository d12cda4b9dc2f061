"""Candidate counts that are maintained, not recounted: per agent, stage, source and channel.

Database triggers on ``candidate`` append a +1/-1 row to ``candidate_count`` in the same
transaction as every insert, stage change, channel change, erasure and delete (migration
0006_fast_candidate_lists), so the counts cannot drift whichever code writes a candidate,
and a rolled-back change rolls its count back with it. Readers sum the rows; ``fold``
replaces the appended rows by one row per key, so a read stays a sum over a few hundred rows
however many candidates there are.
"""
from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from ..models import CandidateCount, Stage

# Fold once this many appended rows wait: a read sums at most this many beyond one row per key.
FOLD_AFTER = 2000

_KEY = "agent_id, stage, source, channel"


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


def pending(session: Session) -> int:
    """How many appended rows wait to be folded."""
    return int(session.scalar(select(func.count()).where(CandidateCount.folded.is_(False))))


def fold(session: Session) -> None:
    """Replace every row by one sum per key (dropping zeros). The totals do not change.

    The caller commits. On PostgreSQL it is one statement, so rows that other transactions
    append meanwhile are either in both its DELETE and its sums or in neither, and two folds
    at once cannot count a row twice. On SQLite the transaction already holds the database's
    write lock (it begins IMMEDIATE), so nobody appends between the two statements.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(
            f"WITH gone AS (DELETE FROM candidate_count RETURNING {_KEY}, n) "
            f"INSERT INTO candidate_count ({_KEY}, n, folded) "
            f"SELECT {_KEY}, sum(n), true FROM gone GROUP BY {_KEY} HAVING sum(n) <> 0"))
        return
    last = session.scalar(select(func.max(CandidateCount.id)))
    if last is None:
        return
    session.execute(text(
        f"INSERT INTO candidate_count ({_KEY}, n, folded) "
        f"SELECT {_KEY}, sum(n), 1 FROM candidate_count WHERE id <= :last GROUP BY {_KEY} HAVING sum(n) <> 0"),
        {"last": last})
    session.execute(text("DELETE FROM candidate_count WHERE id <= :last"), {"last": last})


def fold_if_due(session: Session) -> bool:
    """Fold when enough appended rows wait (decided by a count first); return whether it did.

    The list pages call it before reading counts: folding rewrites rows without changing a
    total, and is skipped (no write at all) until ``FOLD_AFTER`` changes have piled up.
    """
    if pending(session) < FOLD_AFTER:
        return False
    fold(session)
    return True
