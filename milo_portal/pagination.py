"""Page arithmetic shared by the lists (the outbox's numbered pages, the candidates' keyset pages)."""
from __future__ import annotations

from sqlalchemy import Select
from sqlalchemy.orm import Session


def page_count(total: int | None, size: int) -> int | None:
    """How many pages of ``size`` rows ``total`` rows make (at least 1), or None when the total is unknown."""
    if total is None:
        return None
    return max(1, -(-total // size))


def numbered_page(session: Session, statement: Select, number: int, size: int) -> list:
    """Rows of page ``number`` (1-based) of an ordered SELECT."""
    return list(session.scalars(statement.limit(size).offset((max(number, 1) - 1) * size)).all())
