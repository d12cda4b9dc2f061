"""Backups and restores.

SQLite: the online backup API copies the live database in one step. In WAL mode that step
reads one snapshot while the app keeps writing (a reader never blocks a writer), so the copy
is consistent even while the dispatcher sends and candidates answer. The copy goes to a
temporary file next to the target, passes ``PRAGMA integrity_check``, and only then is
renamed into place: a half-written or damaged backup never carries the final name.

PostgreSQL: ``pg_dump --format=custom`` (and ``pg_restore``) when they are on the PATH;
otherwise the command to run is returned for the operator.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import make_url


class BackupError(Exception):
    """A backup or restore that cannot be done; the message says why and what to do."""


@dataclass
class Outcome:
    """What a backup or restore did: the file and its size, or the commands left to run."""

    path: Path | None = None
    size: int | None = None
    commands: list[str] = field(default_factory=list)  # printed when the tools are not installed


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL, or None for another database."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if not parsed.database or parsed.database == ":memory:":
        raise BackupError("An in-memory SQLite database cannot be backed up.")
    return Path(parsed.database)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def check_sqlite_file(path: Path) -> str | None:
    """Check a SQLite backup file: integrity, and that it is a Milo Portal database.

    Returns its schema revision; raises BackupError with the reason otherwise.
    """
    if not path.is_file():
        raise BackupError(f"{path} does not exist or is not a file.")
    with open(path, "rb") as handle:
        if handle.read(16) != b"SQLite format 3\x00":
            raise BackupError(f"{path} is not a SQLite database.")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        result = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        if result != ["ok"]:
            raise BackupError(f"{path} fails the integrity check: {'; '.join(result[:5])}")
        try:
            return conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        except (sqlite3.DatabaseError, TypeError):
            raise BackupError(f"{path} is not a Milo Portal database (it has no schema revision).") from None
    except sqlite3.DatabaseError as err:
        raise BackupError(f"{path} cannot be read as a database: {err}") from None
    finally:
        conn.close()


def backup_sqlite(source: Path, target: Path) -> Outcome:
    """Copy the live database ``source`` to ``target`` (temp file, integrity check, rename)."""
    if not source.is_file():
        raise BackupError(f"The database file {source} does not exist.")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    src, dst = _connect(source), sqlite3.connect(str(tmp), isolation_level=None)
    try:
        src.backup(dst)  # pages=-1: the whole database in one step, from one snapshot
        # A single self-contained file (no -wal beside it), whatever the live database uses.
        dst.execute("PRAGMA journal_mode=DELETE")
        result = [row[0] for row in dst.execute("PRAGMA integrity_check")]
        if result != ["ok"]:
            raise BackupError(f"The copy fails the integrity check ({'; '.join(result[:5])}); nothing was kept.")
    except BaseException:
        dst.close()
        tmp.unlink(missing_ok=True)
        raise
    finally:
        src.close()
    dst.close()
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, target)
    return Outcome(path=target, size=target.stat().st_size)


def restore_sqlite(backup: Path, target: Path) -> Outcome:
    """Copy a checked backup over the database ``target`` through SQLite (locks respected).

    Writing through the backup API, rather than replacing the file, takes the database's
    write lock and keeps its WAL consistent, so a process that still has it open sees either
    the old or the restored database, never a mix.
    """
    src = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    dst = _connect(target)
    try:
        dst.execute("PRAGMA journal_mode=WAL")
        src.backup(dst)
        result = [row[0] for row in dst.execute("PRAGMA integrity_check")]
        if result != ["ok"]:
            raise BackupError(f"The restored database fails the integrity check: {'; '.join(result[:5])}")
    finally:
        src.close()
        dst.close()
    return Outcome(path=target, size=target.stat().st_size)


def sqlite_has_data(path: Path) -> bool:
    """Whether the database file exists and holds any table (so a restore would overwrite it)."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0] > 0
    finally:
        conn.close()


# --- PostgreSQL ---------------------------------------------------------------------------

def _pg_parts(url: str) -> tuple[str, dict]:
    """A libpq URL without the password, and the environment carrying it (never on a command line)."""
    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = parsed.password
    plain = parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    return plain, env


def pg_tool(name: str) -> str | None:
    """Where ``pg_dump``/``pg_restore`` is: the PATH first, then Debian's versioned directories."""
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    return None


def _run(command: list[str], env: dict) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupError(f"{Path(command[0]).name} failed: {(done.stderr or done.stdout).strip()[:800]}")


def backup_postgresql(url: str, target: Path) -> Outcome:
    """``pg_dump --format=custom`` to a temp file, checked with ``pg_restore --list``, then renamed."""
    plain, env = _pg_parts(url)
    dump, restore = pg_tool("pg_dump"), pg_tool("pg_restore")
    if dump is None or restore is None:
        return Outcome(commands=[f"pg_dump --format=custom --file={target} --dbname='{plain}'"
                                 "   # set PGPASSWORD if the server asks for a password"])
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        _run([dump, "--format=custom", f"--file={tmp}", f"--dbname={plain}"], env)
        _run([restore, "--list", str(tmp)], env)  # a readable archive, not a truncated file
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)
    return Outcome(path=target, size=target.stat().st_size)


def restore_postgresql(url: str, backup: Path) -> Outcome:
    """``pg_restore --clean --if-exists --single-transaction``: all of the backup, or nothing."""
    plain, env = _pg_parts(url)
    restore = pg_tool("pg_restore")
    command = ["--clean", "--if-exists", "--no-owner", "--single-transaction", f"--dbname={plain}", str(backup)]
    if restore is None:
        return Outcome(commands=["pg_restore " + " ".join(command[:-2]) + f" --dbname='{plain}' {backup}"])
    _run([restore, "--list", str(backup)], env)
    _run([restore, *command], env)
    return Outcome(path=backup, size=backup.stat().st_size)


# --- one entry point for the command and the nightly job ----------------------------------

def backup_name(now: datetime, url: str) -> str:
    """The file name of a backup taken at ``now``: sortable, one per second."""
    suffix = "sqlite3" if sqlite_file(url) else "dump"
    return f"milo-{now.strftime('%Y%m%dT%H%M%SZ')}.{suffix}"


def take_backup(url: str, target: Path | str, now: datetime, overwrite: bool = False) -> Outcome:
    """Back the database at ``url`` up to ``target`` (a file, or a directory to put one in).

    A target written with a trailing slash (``/backups/``) is a directory, made if missing:
    it must never become a file of that name.
    """
    if isinstance(target, str):
        folder = target.endswith(("/", os.sep))
        target = Path(target)
        if folder:
            target.mkdir(parents=True, exist_ok=True)
    if target.is_dir():
        target = target / backup_name(now, url)
    if target.exists() and not overwrite:
        raise BackupError(f"{target} exists: choose another name (a backup never overwrites a file).")
    if not target.parent.is_dir():
        raise BackupError(f"The directory {target.parent} does not exist.")
    source = sqlite_file(url)
    return backup_sqlite(source, target) if source else backup_postgresql(url, target)


def prune(directory: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` backups the nightly job made in ``directory``."""
    made = sorted(p for p in directory.glob("milo-*") if p.suffix in (".sqlite3", ".dump") and p.is_file())
    doomed = made[:-keep] if keep > 0 else made
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed
