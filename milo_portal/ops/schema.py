"""Refuse to run on a database that a newer version of the app has upgraded.

Such a database has a schema revision this code does not know: running on it would read
and write columns and constraints the code has never seen. ``flask milo check-schema``
runs before ``flask db upgrade`` in the container, and the WSGI entry point checks too.
"""
from __future__ import annotations

from alembic.script import ScriptDirectory
from alembic.config import Config as AlembicConfig
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from ..config import ROOT


class SchemaTooNew(RuntimeError):
    """The database's schema revision is unknown to this code (it was made by a newer version)."""


def known_revisions() -> set[str]:
    """Every revision id in this code's migrations."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(ROOT / "migrations"))
    return {rev.revision for rev in ScriptDirectory.from_config(config).walk_revisions()}


def database_revisions(conn: Connection) -> list[str]:
    """The revision(s) the database is at (empty for a new database)."""
    if not inspect(conn).has_table("alembic_version"):
        return []
    return [row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))]


def check_not_newer(conn: Connection) -> None:
    """Raise SchemaTooNew with an operator's message when the database is ahead of the code."""
    unknown = [rev for rev in database_revisions(conn) if rev not in known_revisions()]
    if unknown:
        raise SchemaTooNew(
            f"This database is at schema revision {', '.join(unknown)}, which this version of Milo Portal "
            "does not know: a newer version has upgraded it. Run that newer version (or restore a backup "
            "taken before the upgrade with `flask milo restore`); an older version must never run on it.")


def refuse_newer_database(url: str) -> None:
    """Stop the process with the operator's message when the database is ahead of the code.

    The WSGI entry point calls it before the app (and its scheduler) starts, so no worker
    ever serves or ticks on such a database.
    """
    import sys

    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            check_not_newer(conn)
    except SchemaTooNew as err:
        print(f"Milo Portal refuses to start: {err}", file=sys.stderr)
        raise SystemExit(3) from None
    finally:
        engine.dispose()
