"""``flask milo copy-to URL``: copy every row of this database into another (SQLite → PostgreSQL).

The target is migrated to this version's schema by ``flask db upgrade`` first (in a child
process, exactly as a deployment would), must hold no data of its own, and receives the
rows table by table in dependency order, in batches. ``candidate_count``,
``agent_funnel_count`` and the Metrics facts (``metrics_stale``, ``metrics_fact``,
``metrics_answer``) are not copied: the target's own triggers fill them as the candidates
arrive (every candidate marked stale, its facts written by the first refresh). Nor is
``metrics_mark``: the target keeps the marks its migration made, which only ever lead a
first refresh to mark candidates that are stale already.
PostgreSQL's id sequences are moved past the copied ids at the end.
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Callable

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Engine, make_url

from ..config import ROOT, normalise_database_url
from ..extensions import db

BATCH = 1000
# Rows the migrations make in a new database; the copy replaces them with the source's.
MADE_BY_MIGRATIONS = ("settings", "job_lease", "ops_settings")
FILLED_BY_TRIGGERS = ("candidate_count", "agent_funnel_count", "metrics_stale", "metrics_fact", "metrics_answer")
KEPT_BY_TARGET = ("metrics_mark",)


class CopyError(Exception):
    """The copy cannot start or failed; the message says why."""


def _migrate(url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILO_")}
    env.update(MILO_DATABASE_URL=url, MILO_SCHEDULER="0", MILO_SECRET_KEY=os.environ.get("MILO_SECRET_KEY", "x" * 32))
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "milo_portal", "db", "upgrade"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise CopyError(f"Migrating the target failed: {(done.stderr or done.stdout).strip()[-800:]}")


def copy_database(source: Engine, url: str, echo: Callable[[str], None] = lambda line: None) -> dict[str, int]:
    """Copy every table of ``source`` into the empty database at ``url``; rows per table."""
    target_url = normalise_database_url(url)
    if make_url(target_url) == source.url:
        raise CopyError("The target is this very database.")
    _migrate(url)
    target = create_engine(target_url)
    tables = [t for t in db.metadata.sorted_tables if t.name not in FILLED_BY_TRIGGERS + KEPT_BY_TARGET]
    try:
        with target.connect() as conn:
            busy = [t.name for t in tables if t.name not in MADE_BY_MIGRATIONS
                    and conn.execute(select(func.count()).select_from(t)).scalar()]
        if busy:
            raise CopyError(f"The target already holds data ({', '.join(busy)}): copy into an empty database.")
        counts: dict[str, int] = {}
        with source.connect() as src, target.begin() as dst:
            for table in reversed(tables):
                if table.name in MADE_BY_MIGRATIONS:
                    dst.execute(table.delete())
            for table in tables:
                rows, batch = 0, []
                for row in src.execute(select(table).order_by(*table.primary_key.columns)
                                       .execution_options(yield_per=BATCH)).mappings():
                    batch.append(dict(row))
                    if len(batch) >= BATCH:
                        dst.execute(table.insert(), batch)
                        rows, batch = rows + len(batch), []
                if batch:
                    dst.execute(table.insert(), batch)
                    rows += len(batch)
                counts[table.name] = rows
                echo(f"  {table.name}: {rows:,}")
            if target.dialect.name == "postgresql":
                for table in tables:
                    if "id" in table.c and table.c.id.primary_key and table.c.id.autoincrement:
                        dst.execute(text(f"SELECT setval(pg_get_serial_sequence('\"{table.name}\"', 'id'), "
                                         f"COALESCE((SELECT MAX(id) FROM \"{table.name}\"), 0) + 1, false)"))
        return counts
    finally:
        target.dispose()
