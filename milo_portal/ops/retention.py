"""Retention: erase a candidate's personal data a set number of days after they completed,
expired or opted out.

Erasing reuses ``candidates.services.erase_candidate`` (the candidate page's Delete), so
both remove the same things and keep the same anonymous events, which the metrics count.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..candidates.services import erase_candidate
from ..models import Candidate, Event, Stage
from ..transactions import READ_ONLY, end_transaction, write_unit

# The events that end a candidate's interview; the latest one starts the retention clock.
END_EVENTS = ("completed", "expired", "opted_out")
# Candidates erased per write unit. One erasure is about ten statements (the candidate's
# update fires the list-count and search-index triggers): measured at 2-10 ms each on SQLite
# (the low figure on an idle machine, the high one with both cores busy), so 5 per unit keeps
# the write lock well under the ~50 ms a unit may hold it.
ERASE_CHUNK = 5
PASS_LIMIT = 2000  # per daily run: a larger backlog is finished by the following ticks


def ended_at():
    """SQL: when the candidate's interview ended (their latest ending event)."""
    return (select(func.max(Event.at)).where(Event.candidate_id == Candidate.id, Event.type.in_(END_EVENTS))
            .correlate(Candidate).scalar_subquery())


def _due(cutoff: datetime):
    return [Candidate.stage.in_(Stage.TERMINAL), Candidate.erased_at.is_(None), ended_at() <= cutoff]


def erasure_due_at(session: Session, candidate: Candidate, days: int) -> datetime | None:
    """When retention will erase this candidate (None while their interview has not ended)."""
    if candidate.erased_at is not None or candidate.stage not in Stage.TERMINAL:
        return None
    ended = session.scalar(select(func.max(Event.at)).where(Event.candidate_id == candidate.id,
                                                             Event.type.in_(END_EVENTS)))
    return ended + timedelta(days=days) if ended else None


def erase_expired_data(session: Session, now: datetime, days: int, limit: int | None = None) -> tuple[int, bool]:
    """Erase candidates whose interview ended more than ``days`` ago; return (erased, more left).

    The ids are found in a deferred read; each chunk re-selects them with the same condition
    inside its write unit (the world may have moved: a deadline extended, a Delete).
    """
    cutoff, limit = now - timedelta(days=days), limit or PASS_LIMIT
    end_transaction(session)
    session.connection(execution_options={READ_ONLY: True})
    ids = list(session.scalars(select(Candidate.id).where(*_due(cutoff)).order_by(Candidate.id).limit(limit)))
    end_transaction(session)
    erased = 0
    for i in range(0, len(ids), ERASE_CHUNK):
        with write_unit(session) as work:
            chunk = work.scalars(select(Candidate).where(Candidate.id.in_(ids[i:i + ERASE_CHUNK]), *_due(cutoff))
                                 .order_by(Candidate.id)).all()
            for candidate in chunk:
                erase_candidate(work, candidate, now, None)
        erased += len(chunk)
    return erased, len(ids) == limit
