"""Reading the team settings: a single row with id 1, made by the migrations."""
from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..models import Settings


def default_settings() -> Settings:
    """A detached Settings with every column's default, for a database that lost its row."""
    settings = Settings(id=1)
    for column in Settings.__table__.columns:
        if column.default is not None and column.default.is_scalar:
            setattr(settings, column.key, column.default.arg)
    return settings


def get_settings(session: Session) -> Settings:
    """Return the team settings for reading.

    The migrations create the row, so a request never writes just to read the settings. If
    the row is missing all the same (someone emptied the table), the defaults are returned
    without being added to the session: a GET still writes nothing.
    """
    return session.get(Settings, 1) or default_settings()


def settings_for_update(session: Session) -> Settings:
    """Return the team settings row to change (made if missing); the caller commits."""
    settings = session.get(Settings, 1)
    if settings is None:
        try:
            with session.begin_nested():
                settings = Settings(id=1)
                session.add(settings)
        except IntegrityError:  # another request made it first
            settings = session.get(Settings, 1)
    return settings
