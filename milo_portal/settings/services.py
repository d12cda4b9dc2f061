"""Reading the team settings (a single row, made on first use)."""
from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..models import Settings


def get_settings(session: Session) -> Settings:
    """Return the team settings, creating the row with defaults the first time."""
    settings = session.get(Settings, 1)
    if settings is None:
        settings = Settings(id=1)
        session.add(settings)
        try:
            session.flush()
        except IntegrityError:  # another request made it first
            session.rollback()
            settings = session.get(Settings, 1)
    return settings
