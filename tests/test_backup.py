"""Backups and restores: `flask milo backup` / `restore`, the nightly backup, and a backup
taken while the dispatcher sends and candidates are being added."""
from __future__ import annotations

import re
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from milo_portal.extensions import db
from milo_portal.models import Candidate, Message, MessageStatus, OpsSettings
from milo_portal.ops import backup, jobs
from milo_portal.transactions import write_unit
from tests.conftest import at, make_agent, make_due_invites, use_smtp
from tests.servers import SmtpSink

T = at("2026-11-30T10:00:00")


def _sqlite() -> bool:
    return db.engine.dialect.name == "sqlite"


def backup_rows(path: Path, table: str, column: str = "id") -> list:
    """One column of a table as the backup file holds it (SQLite file or pg_dump archive)."""
    if path.read_bytes()[:16] == b"SQLite format 3\x00":
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return [row[0] for row in conn.execute(f'SELECT "{column}" FROM "{table}" ORDER BY id')]
        finally:
            conn.close()
    text = subprocess.run([backup.pg_tool("pg_restore"), "--data-only", f"--table={table}", "-f", "-", str(path)],
                          capture_output=True, text=True, check=True).stdout
    header = re.search(rf"COPY public\.{table} \((.*?)\) FROM stdin;\n(.*?)\n\\\.", text, re.S)
    columns = [c.strip().strip('"') for c in header.group(1).split(",")]
    rows = [line.split("\t") for line in header.group(2).splitlines() if line]
    index = columns.index(column)
    values = [row[index] for row in rows]
    return sorted(int(v) for v in values) if column == "id" else values


def _people(n: int, prefix: str = "b") -> list[int]:
    agent = make_agent(f"Backup {prefix}")
    people = [Candidate(agent_id=agent.id, name=f"{prefix}{i}", email=f"{prefix}{i}@example.com") for i in range(n)]
    db.session.add_all(people)
    db.session.commit()
    return [c.id for c in people]


def test_a_backup_is_checked_and_holds_the_data(app, runner, tmp_path):
    ids = _people(5)
    result = runner.invoke(args=["milo", "backup", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "integrity check passed" in result.output
    made, = tmp_path.glob("milo-*")
    assert backup_rows(made, "candidate") == ids
    assert not list(tmp_path.glob(".*partial"))  # nothing half-written is left behind
    if _sqlite():
        assert backup.check_sqlite_file(made) == "0012_operations" or backup.check_sqlite_file(made)
    # A backup never overwrites a file.
    again = runner.invoke(args=["milo", "backup", str(made)])
    assert again.exit_code == 1 and "exists" in again.output


def test_a_folder_written_with_a_slash_is_made_and_gets_a_dated_file_and_an_audit_entry(app, runner, tmp_path):
    """Defect: `milo backup /backups/` with no such folder wrote a file named /backups."""
    from milo_portal.models import AuditEntry

    _people(1)
    folder = tmp_path / "backups"
    result = runner.invoke(args=["milo", "backup", f"{folder}/"])
    assert result.exit_code == 0, result.output
    assert folder.is_dir() and len(list(folder.glob("milo-*"))) == 1
    entry = db.session.query(AuditEntry).filter_by(kind="backup").one()
    assert entry.actor and "from the command line" in entry.detail


def test_a_backup_from_the_command_line_is_the_last_backup_settings_and_monitoring_show(app, runner, client, auth,
                                                                                        tmp_path):
    """Defect (trial): a `milo backup` run from cron never showed as the last backup: Settings
    said "none yet", /healthz had last_at null and milo_last_backup_timestamp_seconds stayed 0,
    so the README's suggested alert fired for a team that backs up every night."""
    _people(1)
    result = runner.invoke(args=["milo", "backup", f"{tmp_path}/"])
    assert result.exit_code == 0, result.output
    name = next(tmp_path.glob("milo-*")).name
    health = client.get("/healthz").get_json()
    assert health["backup"]["last_at"] is not None and health["backup"]["last_size_bytes"] > 0, health
    settings = " ".join(client.get("/settings").get_data(as_text=True).split())
    assert name in settings and "none yet" not in settings
    lines = dict(line.rsplit(" ", 1) for line in client.get("/ops/metrics").get_data(as_text=True).splitlines()
                 if line and not line.startswith("#"))
    assert float(lines["milo_last_backup_timestamp_seconds"]) > 0


def test_restore_refuses_a_damaged_file_and_needs_yes_to_replace_data(app, runner, tmp_path):
    ids = _people(3)
    good = tmp_path / "good.backup"
    assert runner.invoke(args=["milo", "backup", str(good)]).exit_code == 0
    garbage = tmp_path / "garbage.backup"
    garbage.write_bytes(b"SQLite format 3\x00" + b"\x07" * 5000 if _sqlite() else b"PGDMP" + b"\x07" * 5000)
    result = runner.invoke(args=["milo", "restore", "--yes", str(garbage)])
    assert result.exit_code == 1 and "Error:" in result.output and "Traceback" not in result.output, result.output
    if _sqlite():
        # A real database with a damaged page: the integrity check finds it.
        damaged = tmp_path / "damaged.backup"
        data = bytearray(good.read_bytes())
        page = int.from_bytes(data[16:18], "big")
        for offset in range(page, len(data), page):
            data[offset:offset + 8] = b"\xff" * 8  # no valid b-tree page type
        damaged.write_bytes(bytes(data))
        result = runner.invoke(args=["milo", "restore", "--yes", str(damaged)])
        assert result.exit_code == 1 and ("integrity" in result.output or "cannot be read" in result.output)
    result = runner.invoke(args=["milo", "restore", str(good)])
    assert result.exit_code == 1 and "--yes" in result.output
    db.session.expire_all()
    assert sorted(c.id for c in db.session.query(Candidate)) == ids  # nothing was touched
    # With --yes the backup replaces what changed since.
    db.session.query(Candidate).filter(Candidate.id == ids[0]).delete()
    _people(2, prefix="late")
    db.session.commit()
    db.session.remove()
    db.engine.dispose()
    result = runner.invoke(args=["milo", "restore", "--yes", str(good)])
    assert result.exit_code == 0, result.output
    db.session.remove()
    assert sorted(c.id for c in db.session.query(Candidate)) == ids


def test_a_backup_taken_while_the_dispatcher_sends_and_candidates_arrive_holds_every_committed_candidate(
        app, runner, tmp_path, team_settings):
    make_due_invites(300, T, prefix="d")

    class SlowSink(SmtpSink):
        async def handle_DATA(self, server, session, envelope):
            import asyncio

            await asyncio.sleep(0.005)
            return await super().handle_DATA(server, session, envelope)

    sink = SlowSink().start()
    use_smtp(app, sink.port)
    agent_id = make_agent("Arrivals").id
    db.session.commit()  # reading the id began a transaction: on SQLite it would hold the write lock
    committed: list[int] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def dispatcher():
        with app.app_context():
            try:
                dispatch_all()
            except BaseException as err:  # reported by the test below
                errors.append(err)
            finally:
                db.session.remove()

    def dispatch_all():
        from milo_portal.followups.services import dispatch

        dispatch(db.session, T, batch=20)

    def arrivals():
        with app.app_context():
            try:
                i = 0
                while not stop.is_set():
                    with write_unit(db.session) as work:  # what a manual add or one bulk chunk commits
                        people = [Candidate(agent_id=agent_id, name=f"N{i}-{k}", email=f"n{i}-{k}@example.com")
                                  for k in range(5)]
                        work.add_all(people)
                        work.flush()
                        made = [c.id for c in people]
                    committed.extend(made)
                    i += 1
                    time.sleep(0.01)
            except BaseException as err:
                errors.append(err)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=dispatcher), threading.Thread(target=arrivals)]
    try:
        for thread in threads:
            thread.start()
        while len(sink.messages) < 40 and not errors:  # the dispatch is well under way
            time.sleep(0.02)
        assert not errors, errors
        before = list(committed)
        result = runner.invoke(args=["milo", "backup", str(tmp_path / "during.backup")])
        time.sleep(0.2)
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        stop.set()
        sink.stop()
    assert not errors, errors
    assert result.exit_code == 0, result.output
    path = tmp_path / "during.backup"
    if _sqlite():
        assert backup.check_sqlite_file(path)
    held = set(backup_rows(path, "candidate"))
    assert len(before) >= 5 and set(before) <= held
    statuses = backup_rows(path, "message", "status")
    assert len(statuses) == 300 and set(statuses) <= {MessageStatus.SCHEDULED, MessageStatus.SENDING, MessageStatus.SENT}
    assert len(sink.messages) == 300
    db.session.expire_all()
    assert db.session.query(Message).filter_by(status=MessageStatus.SENT).count() == 300


def test_a_backup_taken_while_the_dispatcher_sends_and_a_bulk_upload_is_created_holds_what_was_committed(
        app, auth, client, runner, tmp_path, team_settings):
    """The backup proof with a real bulk upload: a 2,000-row upload confirmed by a recruiter
    is created by the scheduler's worker in chunks while 200 invites are dispatched; a backup
    taken meanwhile passes the check and holds every candidate committed before it, and the
    upload still finishes whole."""
    from sqlalchemy import func, select

    from milo_portal.imports import services as imports
    from milo_portal.models import ImportBatch
    from tests.test_imports import _big_upload

    app.config["MILO_IMPORT_DIR"] = str(tmp_path / "imports")
    make_due_invites(200, T, prefix="d")
    sink = SmtpSink().start()
    use_smtp(app, sink.port)
    batch = _big_upload(client, make_agent("Career fair"), 2000)
    assert batch.status == ImportBatch.CREATING and batch.rows_done == 0  # queued for the worker
    batch_id = batch.id
    db.session.commit()
    errors: list[BaseException] = []

    def in_app(work):
        def run():
            with app.app_context():
                try:
                    work()
                except BaseException as err:  # reported by the test below
                    errors.append(err)
                finally:
                    db.session.remove()
        return threading.Thread(target=run)

    from milo_portal.followups.services import dispatch

    threads = [in_app(lambda: dispatch(db.session, T, batch=20)),
               in_app(lambda: imports.work_queued(db.session, imports.import_root(), T, "backup-test", budget=None,
                                                  chunk=50, adapt=False))]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while (len(sink.messages) < 30 or db.session.get(ImportBatch, batch_id).rows_done < 200) \
                and not errors and time.monotonic() < deadline:
            db.session.rollback()
            db.session.expire_all()
            time.sleep(0.02)
        db.session.rollback()
        before = set(db.session.scalars(select(Candidate.id)))  # committed so far, bulk chunks included
        db.session.rollback()
        result = runner.invoke(args=["milo", "backup", str(tmp_path / "during.backup")])
        for thread in threads:
            thread.join(timeout=300)
    finally:
        sink.stop()
    assert not errors, errors
    assert result.exit_code == 0, result.output
    path = tmp_path / "during.backup"
    if _sqlite():
        assert backup.check_sqlite_file(path)
    held = set(backup_rows(path, "candidate"))
    assert len(before) > 400 and before <= held  # the 200 invited and at least 200 from the upload
    db.session.expire_all()
    done = db.session.get(ImportBatch, batch_id)
    assert (done.status, done.rows_done) == (ImportBatch.DONE, 2000)
    assert db.session.scalar(select(func.count()).select_from(Candidate)
                             .where(Candidate.import_batch_id == batch_id)) == 2000
    received = Counter(m.rcpt_tos[0] for m in sink.messages)  # the upload's invites may follow once it is whole
    assert set(received.values()) == {1} and {f"d{i}@example.com" for i in range(200)} <= set(received)


def test_the_nightly_backup_keeps_the_newest_n_and_reports_the_last_one(app, client, auth, tmp_path):
    app.config["MILO_BACKUP_DIR"] = str(tmp_path / "nightly")
    _people(2)
    assert jobs.nightly_backup(db.session, T, "test:1") is False  # off by default
    response = client.post("/settings/backups", {"b-backup_enabled": "y", "b-backup_hour": "2", "b-backup_keep": "2"})
    assert response.status_code == 302
    days = [at("2026-11-30T10:00:00"), at("2026-12-01T02:00:30"), at("2026-12-02T02:00:30")]
    for day in days:
        assert jobs.nightly_backup(db.session, day, "test:1") is True
        # Once a night: the other workers' ticks (and this one's) wait for the next 02:00 UTC.
        assert jobs.nightly_backup(db.session, day + timedelta(minutes=1), "test:2") is False
    kept = sorted(p.name for p in (tmp_path / "nightly").iterdir())
    assert [name.split(".")[0] for name in kept] == ["milo-20261201T020030Z", "milo-20261202T020030Z"]
    db.session.expire_all()
    row = db.session.get(OpsSettings, 1)
    assert row.last_backup_at == days[-1] and row.last_backup_size == (tmp_path / "nightly" / kept[1]).stat().st_size
    assert row.last_backup_error is None
    page = client.get("/settings").get_data(as_text=True)
    assert kept[1] in page and "MB" in page
    assert client.get("/healthz").json["backup"]["last_size_bytes"] == row.last_backup_size


def test_a_nightly_backup_that_fails_says_why_on_the_settings_page(app, client, auth, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    app.config["MILO_BACKUP_DIR"] = str(blocker / "backups")
    db.session.merge(OpsSettings(id=1, backup_enabled=True))
    db.session.commit()
    assert jobs.nightly_backup(db.session, T, "test:1") is True
    db.session.expire_all()
    row = db.session.get(OpsSettings, 1)
    assert row.last_backup_at is None and row.last_backup_error and row.last_backup_error_at == T
    assert "Last attempt failed" in client.get("/settings").get_data(as_text=True)


@pytest.mark.parametrize("field,value", [("b-backup_hour", "24"), ("b-backup_keep", "0"), ("b-backup_hour", "")])
def test_bad_backup_settings_are_a_message_next_to_the_field(client, auth, field, value):
    data = {"b-backup_enabled": "y", "b-backup_hour": "2", "b-backup_keep": "7", field: value}
    response = client.post("/settings/backups", data)
    assert response.status_code == 422 and f'id="{field}-error"' in response.get_data(as_text=True)
