"""The transaction discipline, in one place (docs/architecture.md explains it at length).

1. Reads run in ordinary deferred transactions. On SQLite in WAL mode a reader takes no
   lock that stops a writer, so a slow page never blocks a click, a send or a login.
2. A write is one short unit. On SQLite it begins ``IMMEDIATE`` (it takes the write lock up
   front and waits ``busy_timeout`` for it, instead of failing half-way when a deferred
   reader tries to upgrade), and it re-reads what it decides on: a conditional UPDATE
   (``... WHERE stage IN (...)``), ``INSERT ... ON CONFLICT DO NOTHING``, or a SELECT inside
   the unit. Which transactions are write units:
   - every transaction of a state-changing request (POST, PUT, PATCH, DELETE);
   - background work outside a request (scheduler ticks, CLI commands), which keeps each
     unit small by working in chunks;
   - a :func:`write_unit` block, for the rare GET that must record something (a candidate's
     first visit). It decides in Python first, so a repeat visit writes nothing.
   Everything else (GET, HEAD, OPTIONS, POSTs marked :func:`reads_only`, and
   :func:`read_only` work) begins deferred.
3. No network call (SMTP, Twilio, webhooks, DNS) while a transaction is open: a send first
   ends its transaction. :func:`assert_no_transaction` trips in tests when that is broken.
4. Long work (planning, expiry, exports) goes in chunks that hold the write lock for at most
   about 50 ms each, and one planner runs per tick across processes (a lease row).
5. On SQLite, the write units of one process take turns on a queue (:data:`WRITER`) before
   they ask SQLite for its lock. SQLite lets a waiting writer sleep and retry (1, 2, 5 ... up
   to 100 ms between tries), so sixteen threads wanting to save an answer at once would
   spend most of their time asleep while the lock sits free; queued in the process, each
   takes the lock the moment the one before commits. Between processes (gunicorn workers,
   a CLI dispatch) the turn is a lock on a file beside the database (``<db>-writer.lock``),
   asked again after 50 µs, then less and less often, up to every millisecond: without it,
   a worker whose last try failed slept up to 100 ms while the other worker's queue took
   the lock again and again, and saving an answer waited seconds at the 99th percentile.

6. On SQLite, a thread of each process copies the write-ahead log into the database file
   every second (:func:`init_checkpointer`, ``MILO_SQLITE_CHECKPOINT_MS``), so a request's
   COMMIT never does. By default SQLite checkpoints inside the COMMIT that takes the log past
   1,000 pages, with an fsync of the database file: one answer in fifty paid 30-40 ms for it
   (p99 of saving an answer, in-process: 34-42 ms with, 6-7 ms without). The commits keep a
   far-off limit of their own (:data:`CHECKPOINT_BACKSTOP_PAGES`) for a process whose thread
   is not running.

7. On SQLite, the busiest write (saving an answer) is one statement in autocommit, into a
   TEMP view whose INSTEAD OF trigger makes its writes (:func:`one_statement_write`): SQLite
   takes the lock, writes and commits within one call that runs without the GIL. As a unit
   of five calls, each waiting for the GIL from the worker's other threads, it held the lock
   2-5 ms at the median under load (0.6 ms as one statement).

8. On SQLite, the candidate pages' reads (the candidate with its interview and help line,
   the questions with the candidate's answers) are each one statement in autocommit
   (:class:`SqliteRead`): compiled once, run on a pooled connection outside any
   transaction, so SQLite gives the statement its own read snapshot. Through the session,
   the BEGIN, the COMMIT and SQLAlchemy's execution around the same statement cost four
   times what SQLite takes to answer it (about 165 µs against 35 µs). What the page then
   writes re-checks what it decides on (rule 2), as it would after a read transaction.

PostgreSQL needs no BEGIN mode: it locks rows, not the database. The same units keep its
transactions short and the conditional statements keep concurrent writers correct.
"""
from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from flask import current_app, has_app_context, has_request_context, request
from sqlalchemy import delete, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.pool import Pool
from sqlalchemy.orm import Session, scoped_session

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
WRITE = "milo_write"
READ_ONLY = "milo_read_only"
# The queue of this process's SQLite write units (rule 5 above). Waiting for it is bounded
# by the same time SQLite's busy_timeout allows, after which SQLite decides as before.
WRITER = threading.Lock()
WRITER_WAIT_SECONDS = 10.0
# How long a write unit sleeps between its asks for the other processes' turn: first 50 µs,
# doubling to 1 ms. Saving an answer holds the turn about 0.2 ms, so a first pause of a whole
# millisecond left the turn free most of the time the other worker waited.
FILE_TURN_FIRST_PAUSE = 0.00005
FILE_TURN_LAST_PAUSE = 0.001
_TURN = "milo_writer_turn"
_FILE_TURN = "milo_writer_file_turn"
_owner: int | None = None  # the thread whose write unit has the turn
_PROCEDURES = "milo_procedures"  # the one_statement_write set-ups a connection has run


def begins_immediate(options: dict) -> bool:
    """Whether a SQLite transaction with these execution options is a write unit."""
    if options.get(READ_ONLY):
        return False
    if options.get(WRITE):
        return True
    if has_request_context():
        if request.method in SAFE_METHODS:
            return False
        view = current_app.view_functions.get(request.endpoint or "")
        return not getattr(view, "milo_reads_only", False)
    return True  # scheduler ticks and CLI commands: short write units, chunked


def reads_only(view):
    """Mark a POST view that writes nothing (a preview, a field check): it begins deferred.

    They are POSTs for the CSRF token and the size of what they carry, not because they
    change anything; a slow template preview must not hold the write lock while it renders.
    The mark is on the view itself, so it holds from the request's first query (loading the
    logged-in user) on.
    """
    view.milo_reads_only = True
    return view


# Rule 6: how often this process's thread checkpoints (seconds; 0: SQLite checkpoints in the
# commits, as it does by default), and the log size at which a commit still does it itself.
_checkpoint_seconds = 0.0
CHECKPOINT_BACKSTOP_PAGES = 10_000
_checkpointers: dict[tuple[int, str], threading.Thread] = {}
_checkpointers_guard = threading.Lock()


def init_checkpointer(app) -> None:
    """Turn rule 6 on for this app's SQLite database (``MILO_SQLITE_CHECKPOINT_MS``; 0: off).

    The thread starts with the first connection of each process (so also in every gunicorn
    worker forked after the app was made).
    """
    global _checkpoint_seconds
    _checkpoint_seconds = max(0, int(app.config.get("MILO_SQLITE_CHECKPOINT_MS", 0))) / 1000


def _ensure_checkpointer(dbapi_connection) -> None:
    row = dbapi_connection.execute("PRAGMA database_list").fetchone()
    path = row[2] if row else ""
    if not path:  # a memory or temporary database: nothing to copy
        return
    key = (os.getpid(), path)
    if key in _checkpointers:
        return
    with _checkpointers_guard:
        if key not in _checkpointers:
            thread = threading.Thread(target=_checkpoint_loop, args=(path, _checkpoint_seconds),
                                      name="milo-sqlite-checkpoint", daemon=True)
            _checkpointers[key] = thread
            thread.start()


def _checkpoint_loop(path: str, seconds: float) -> None:
    """Copy the log into the database every ``seconds`` (PASSIVE: never waits for, nor stops,
    a reader or a writer), until the database file is gone."""
    import sqlite3

    connection = None
    try:
        while os.path.exists(path):
            time.sleep(seconds)
            try:
                connection = connection or sqlite3.connect(path, timeout=0, isolation_level=None,
                                                           check_same_thread=False)
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as err:  # (busy: another process's thread is at it)
                log.debug("checkpoint of %s skipped: %s", path, err)
    finally:
        if connection is not None:
            connection.close()
        _checkpointers.pop((os.getpid(), path), None)


@event.listens_for(Engine, "connect")
def _sqlite_on_connect(dbapi_connection, connection_record):
    """Turn on WAL, a busy timeout and foreign keys for every SQLite connection."""
    import sqlite3

    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    # Let SQLAlchemy issue BEGIN itself (see _sqlite_on_begin) instead of pysqlite.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Read the file through memory mapping (SQLite caps the size at its own maximum): a
    # page of a million-candidate list touches a few thousand pages spread over gigabytes,
    # and reading each through the 2 MB page cache costs more than the query itself.
    cursor.execute("PRAGMA mmap_size=8589934592")
    if _checkpoint_seconds:
        cursor.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_BACKSTOP_PAGES}")
        _ensure_checkpointer(dbapi_connection)
    cursor.close()
    # lower() for the candidates search: SQLite's own folds only ASCII letters, the trigram
    # search index folds all of Unicode (see candidates.services.Search).
    dbapi_connection.create_function("milo_lower", 1, _lower, deterministic=True)


def _lower(value):
    return value.lower() if isinstance(value, str) else value


@event.listens_for(Engine, "begin")
def _sqlite_on_begin(conn):
    """Begin SQLite transactions deferred for reads and IMMEDIATE for write units."""
    if conn.dialect.name != "sqlite":
        return
    if not begins_immediate(conn.get_execution_options()):
        conn.exec_driver_sql("BEGIN")
        return
    _take_turn(conn.info, conn.engine.url.database)
    try:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    except BaseException:
        _end_turn(conn.info)
        raise


def _take_turn(info: dict, database: str | None) -> None:
    """Wait for this process's write units before this one, then for other processes' (rule 5)."""
    global _owner
    if _owner == threading.get_ident():
        # This thread already writes on another connection: waiting for itself would never
        # end, so SQLite's own lock decides, as it always did.
        return
    started = time.monotonic()
    if not WRITER.acquire(timeout=WRITER_WAIT_SECONDS):
        log.warning("waited %.0f s for this process's earlier write units; asking SQLite directly",
                    WRITER_WAIT_SECONDS)
        return
    info[_TURN] = True
    _owner = threading.get_ident()
    fd = _lock_file(database)
    if fd is None:
        return
    pause = FILE_TURN_FIRST_PAUSE
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            info[_FILE_TURN] = fd
            return
        except BlockingIOError:
            if time.monotonic() - started > WRITER_WAIT_SECONDS:
                log.warning("waited %.0f s for other processes' write units; asking SQLite directly",
                            WRITER_WAIT_SECONDS)
                return
            time.sleep(pause)
            pause = min(pause * 2, FILE_TURN_LAST_PAUSE)


def _end_turn(info: dict) -> None:
    global _owner
    fd = info.pop(_FILE_TURN, None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    if info.pop(_TURN, False):
        _owner = None
        WRITER.release()


_lock_files: dict[tuple[int, str], int] = {}
_lock_files_guard = threading.Lock()


def _lock_file(database: str | None) -> int | None:
    """This process's descriptor of the database's writer lock file (None for a memory database).

    Opened per process id: a descriptor inherited across a fork shares its lock with the
    parent, which would make two processes one.
    """
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    key = (os.getpid(), database)
    fd = _lock_files.get(key)
    if fd is None:
        with _lock_files_guard:
            fd = _lock_files.get(key)
            if fd is None:
                try:
                    fd = os.open(f"{database}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
                except OSError:  # a read-only folder: SQLite's own lock decides
                    return None
                _lock_files[key] = fd
    return fd


@event.listens_for(Engine, "commit")
def _sqlite_on_commit(conn):
    """Let the next write unit of this process go (it waits at most for our COMMIT itself)."""
    _end_turn(conn.info)


@event.listens_for(Engine, "rollback")
def _sqlite_on_rollback(conn):
    """Let the next write unit go after a rollback too."""
    _end_turn(conn.info)


@event.listens_for(Pool, "checkin")
def _sqlite_on_checkin(dbapi_connection, connection_record):
    """A connection returned without commit or rollback (an error) gives up its turn."""
    if connection_record is not None:
        _end_turn(connection_record.info)


def _real(session) -> Session:
    return session() if isinstance(session, scoped_session) else session


def end_transaction(session) -> None:
    """Commit and end the current transaction, keeping the loaded objects as they are.

    A plain commit expires every object, and the next attribute access would begin a new
    transaction (a write unit in a POST) just to read them again, possibly right before a
    network call. Use it to end a read before a write unit or a send.
    """
    real = _real(session)
    if not real.in_transaction():
        return
    keep, real.expire_on_commit = real.expire_on_commit, False
    try:
        real.commit()
    finally:
        real.expire_on_commit = keep


@contextmanager
def write_unit(session) -> Iterator[Session]:
    """One short write: end the read, begin IMMEDIATE (SQLite), commit on success.

    Loaded objects keep their values across the unit; the statements inside must re-check
    what they decide on (conditional UPDATEs, ON CONFLICT), since the world may have moved
    between the read and the write.
    """
    real = _real(session)
    end_transaction(real)
    real.connection(execution_options={WRITE: True})
    keep, real.expire_on_commit = real.expire_on_commit, False
    try:
        yield real
        real.commit()
    except BaseException:
        real.rollback()
        raise
    finally:
        real.expire_on_commit = keep


def one_statement_write(session, setup: str, statement: str, parameters: tuple) -> None:
    """SQLite only (rule 7): ``statement`` as a write unit of its own, in one call into SQLite.

    The read transaction ends; on a pooled connection outside the session (so outside any
    transaction), with this process's and the other processes' turn (rule 5), the statement
    runs in autocommit: SQLite takes its write lock, writes and commits inside that one call,
    which runs without the GIL. ``setup`` (run once per connection) creates the TEMP view and
    INSTEAD OF trigger that the statement inserts into, so one statement can make several
    writes; a ``RAISE(ABORT, ...)`` in the trigger undoes them all and arrives as
    ``sqlite3.IntegrityError``.
    """
    real = _real(session)
    end_transaction(real)
    engine = real.get_bind()
    raw = engine.raw_connection()
    try:
        connection = raw.driver_connection
        if setup not in raw.info.setdefault(_PROCEDURES, set()):
            connection.executescript(setup)
            raw.info[_PROCEDURES].add(setup)
        turn: dict = {}
        _take_turn(turn, engine.url.database)
        try:
            connection.execute(statement, parameters)
        finally:
            _end_turn(turn)
    finally:
        raw.close()


class SqliteRead:
    """A Core SELECT run on SQLite as one statement in autocommit (rule 8), with the same
    result values SQLAlchemy would give (its types' result processors, compiled once).

    :meth:`rows` runs it inside the session's transaction when one is open (so it sees what
    the session wrote), otherwise on a pooled connection outside any transaction.
    """

    def __init__(self, statement) -> None:
        from sqlalchemy.dialects import sqlite

        dialect = sqlite.dialect()
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self._order = tuple(compiled.positiontup or ())
        self._fixed = {name: bind.value for name, bind in compiled.binds.items()}
        self._to_db = {name: bind.type._cached_bind_processor(dialect) for name, bind in compiled.binds.items()}
        self._from_db = tuple(entry.type._cached_result_processor(dialect, None)
                              for entry in compiled._result_columns)

    def parameters(self, values: dict) -> tuple:
        out = []
        for name in self._order:
            value = values[name] if name in values else self._fixed[name]
            convert = self._to_db[name]
            out.append(value if convert is None or value is None else convert(value))
        return tuple(out)

    def rows(self, session, **values) -> list[tuple]:
        real = _real(session)
        parameters = self.parameters(values)
        if real.in_transaction():
            cursor = real.connection().connection.driver_connection.execute(self.sql, parameters)
            found = cursor.fetchall()
        else:
            raw = real.get_bind().raw_connection()
            try:
                found = raw.driver_connection.execute(self.sql, parameters).fetchall()
            finally:
                raw.close()
        convert = self._from_db
        if not any(convert):
            return found
        return [tuple(value if step is None or value is None else step(value)
                      for step, value in zip(convert, row)) for row in found]


def delete_in_units(session, model, condition, chunk: int = 1000) -> int:
    """Delete the rows of ``model`` matching ``condition`` in write units of ``chunk`` rows,
    oldest id first; return how many went (rule 4: each unit holds the lock briefly)."""
    removed = 0
    while True:
        with write_unit(session) as work:
            ids = list(work.scalars(select(model.id).where(condition).order_by(model.id).limit(chunk)))
            if ids:
                work.execute(delete(model).where(model.id.in_(ids)))
        removed += len(ids)
        if len(ids) < chunk:
            return removed


def read_only(session) -> None:
    """Run the rest of this session's work in a deferred (read-only) transaction.

    For long reads in a request that would otherwise be a write unit (a CSV export asked
    for with POST): they must not hold SQLite's write lock for as long as they stream.
    """
    real = _real(session)
    real.rollback()
    real.connection(execution_options={READ_ONLY: True})


def assert_no_transaction(session, what: str) -> None:
    """Refuse (in tests) or log (in production) a network call made inside a transaction."""
    real = _real(session)
    if not real.in_transaction():
        return
    message = f"{what} while a database transaction is open: end it first (no network call inside a transaction)"
    if has_app_context() and current_app.testing:
        raise AssertionError(message)
    log.error(message)
