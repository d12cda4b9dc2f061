"""``flask milo ...`` commands: thin wrappers over services."""
from __future__ import annotations

import sys
from pathlib import Path

import click
from flask.cli import AppGroup
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from .errors import DomainError
from .extensions import db

milo_cli = AppGroup("milo", help="Milo Portal administration.")


@milo_cli.command("create-admin")
@click.argument("email")
@click.option("--name", default=None, help="Name used to sign messages (default: from the e-mail).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def create_admin(email: str, name: str | None, password_stdin: bool) -> None:
    """Create a login for EMAIL (asks for the password unless --password-stdin)."""
    from .auth.services import create_user

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    name = name or email.split("@")[0].replace(".", " ").title()
    try:
        user = create_user(db.session, email, name, password)
    except DomainError as err:
        raise click.ClickException(err.message) from None
    click.echo(f"Created {user.email}. Log in at /login.")


@milo_cli.command("demo-data")
@click.option("--candidates", "count", default=200, show_default=True,
              help="How many demo candidates to add, spread over every stage, source and channel.")
@click.option("--days", default=45, show_default=True, type=click.IntRange(1, 3650),
              help="Spread the candidates over this many days up to now.")
@click.option("--seed", default=1, show_default=True, help="Random seed, for repeatable data.")
@click.option("--beside-real-logins", is_flag=True,
              help="Add the demo even though the database has logins of its own (not advised).")
def demo_data(count: int, days: int, seed: int, beside_real_logins: bool) -> None:
    """Fill the database with a demo team, interview agents and candidates with their events."""
    import time

    from .clock import now
    from .config import INSTANCE_DIR
    from .demo import DEMO_PASSWORD, create_demo_candidates, create_demo_data, real_logins

    found = real_logins(db.session)
    if found and not beside_real_logins:
        # The demo team's password is printed in the README: in a real installation those two
        # logins could reset the owner's password, and 200 made-up people would sit among the
        # real candidates and in the Metrics.
        click.echo(f"This database has logins of its own ({', '.join(found[:3])}). Demo data would add "
                   f"two logins anyone can use (password {DEMO_PASSWORD}) and made-up candidates beside "
                   "your real ones.\nTry the demo in a database of its own, e.g.\n"
                   f"  MILO_DATABASE_URL=sqlite:///{INSTANCE_DIR / 'demo.sqlite3'} make run\n"
                   "and in another terminal, with the same MILO_DATABASE_URL, "
                   ".venv/bin/flask --app milo_portal milo demo-data\n"
                   "(--beside-real-logins adds it here anyway.)", err=True)
        raise SystemExit(2)
    click.echo(create_demo_data(db.session, seed=seed))
    started = time.monotonic()
    made = create_demo_candidates(db.session, count, seed, now(), days=days)
    click.echo(f"{made} demo candidates with their events in {time.monotonic() - started:.1f} s.")


def _instant(value: str | None):
    from datetime import datetime, timezone

    from .clock import now

    if not value:
        return now()
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("use ISO-8601, e.g. 2026-12-04T09:30:00+01:00", param_hint="--at") from None
    if at.tzinfo is None:
        raise click.BadParameter("give the time zone offset too, e.g. +01:00 or Z", param_hint="--at")
    return at.astimezone(timezone.utc)


@milo_cli.command("dispatch")
@click.option("--at", "at", default=None, help="Act as if it were this instant (ISO-8601 with offset).")
@click.option("--dry-run", is_flag=True, help="Show what would be sent, to whom, on which channel and why; change nothing.")
def dispatch_command(at: str | None, dry_run: bool) -> None:
    """Run one scheduler tick: plan follow-ups, then send what is due."""
    from .followups.services import dispatch, plan

    instant = _instant(at)
    click.echo(f"Tick at {instant.isoformat(timespec='seconds')}{' (dry run)' if dry_run else ''}")
    if dry_run:
        try:
            planned = plan(db.session, instant, commit=False)  # rolled back below: nothing is kept
            result = dispatch(db.session, instant, dry_run=True)
        finally:
            db.session.rollback()
        click.echo(planned.summary())
        for line in result.would_send:
            click.echo(f"  would send: {line}")
        for line in result.moved:
            click.echo(f"  would move: {line}")
        for line in result.cancelled:
            click.echo(f"  would cancel: {line}")
        if not (result.would_send or result.moved or result.cancelled):
            click.echo("  nothing is due")
        return
    from .followups.services import lease_holder
    from .imports.services import tick_step as imports_step

    # Queued bulk uploads first, to the end (no proxy waits on a command), so their invites go below.
    uploads = imports_step(db.session, instant, lease_holder(), budget=None)
    planned = plan(db.session, instant)
    result = dispatch(db.session, instant)
    from .integrations.outbound import tick_step

    events = tick_step(db.session, instant)
    click.echo(planned.summary())
    for label, lines in (("sent", result.sent), ("moved", result.moved), ("cancelled", result.cancelled),
                         ("retrying", result.retried), ("failed", result.failed)):
        for line in lines:
            click.echo(f"  {label}: {line}")
    click.echo(result.summary())
    if events.delivered or events.retried or events.failed:
        click.echo(events.summary())
    if uploads:
        click.echo(f"Bulk uploads created: {uploads}")


@milo_cli.command("schedule")
@click.argument("candidate")
@click.option("--at", "at", default=None, help="As of this instant (ISO-8601 with offset).")
def schedule_command(candidate: str, at: str | None) -> None:
    """Show the planned follow-ups of one CANDIDATE (id or e-mail)."""
    from .followups.rules import zone
    from .followups.services import upcoming
    from .models import Candidate

    query = select(Candidate).where(Candidate.erased_at.is_(None))
    query = query.where(Candidate.id == int(candidate)) if candidate.isdigit() else query.where(
        Candidate.email == candidate.strip().lower())
    people = db.session.scalars(query).all()
    if not people:
        raise click.ClickException(f"No candidate {candidate!r}.")
    instant = _instant(at)
    for person in people:
        click.echo(f"{person.name or '(no name)'} <{person.email or person.phone}> — {person.agent.title}, "
                   f"stage {person.stage}, time zone {person.timezone}")
        schedule = upcoming(db.session, person, instant)
        for item in schedule.items:
            local = item.when.astimezone(zone(person.timezone))
            click.echo(f"  {item.when.isoformat(timespec='minutes')} ({local.strftime('%a %H:%M %Z')} theirs) "
                       f"{item.kind} by {item.channel} [{item.status}] — {item.rule}")
        if schedule.note:
            click.echo(f"  {schedule.note}")


# --- operations: backups, restores, schema check, moving databases --------------------------

def _database_url() -> str:
    from flask import current_app

    return current_app.config["SQLALCHEMY_DATABASE_URI"]


@milo_cli.command("backup")
@click.argument("path", type=click.Path())
def backup_command(path) -> None:
    """Back the database up to PATH (a new file, or a directory to put a dated file in).

    SQLite: the online backup API, safe while the app runs; the copy is checked with
    PRAGMA integrity_check before it gets its name. PostgreSQL: pg_dump (custom format) when
    installed, else the command to run is printed.
    """
    from .clock import now
    from .ops.backup import BackupError, take_backup

    db.session.remove()
    try:
        outcome = take_backup(_database_url(), path, now())
    except BackupError as err:
        raise click.ClickException(str(err)) from None
    if outcome.commands:
        click.echo("pg_dump is not installed here. Run this where it is:")
        for line in outcome.commands:
            click.echo(f"  {line}")
        return
    from .ops.jobs import record_backup

    record_backup(db.session, now(), outcome, "from the command line")
    click.echo(f"Backed up to {outcome.path} ({outcome.size:,} bytes); integrity check passed.")


@milo_cli.command("restore")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--yes", is_flag=True, help="Replace the current database (refused without it when it holds data).")
def restore_command(path, yes: bool) -> None:
    """Restore the database from the backup at PATH (stop the app first).

    The backup is checked first (integrity, a schema this version knows); a database that
    holds data is only replaced with --yes.
    """
    from . import audit
    from .ops import backup
    from .ops.schema import known_revisions

    url = _database_url()
    db.session.remove()
    db.engine.dispose()
    target = backup.sqlite_file(url)
    try:
        if target is not None:
            revision = backup.check_sqlite_file(path)
            if revision not in known_revisions():
                raise backup.BackupError(f"{path} is at schema revision {revision}, made by a newer version of "
                                         "Milo Portal: restore it with that version.")
            if backup.sqlite_has_data(target) and not yes:
                raise backup.BackupError(f"{target} holds a database. Add --yes to replace it with {path}.")
            outcome = backup.restore_sqlite(path, target)
        else:
            if not path.is_file():
                raise backup.BackupError(f"{path} does not exist or is not a file.")
            if not yes:
                raise backup.BackupError(f"This replaces every table of the PostgreSQL database. Add --yes to "
                                         f"restore {path} over it.")
            outcome = backup.restore_postgresql(url, path)
    except backup.BackupError as err:
        raise click.ClickException(str(err)) from None
    if outcome.commands:
        click.echo("pg_restore is not installed here. Run this where it is:")
        for line in outcome.commands:
            click.echo(f"  {line}")
        return
    try:
        audit.record(db.session, None, "restore", f"database restored from {path.name}")
        db.session.commit()
    except SQLAlchemyError:  # a backup from before the audit log: `flask db upgrade` comes next
        db.session.rollback()
    click.echo(f"Restored from {path}; integrity check passed. Run `flask --app milo_portal db upgrade` "
               "if the backup is from an older version, then start the app.")


@milo_cli.command("check-schema")
def check_schema_command() -> None:
    """Fail with a clear message when the database was upgraded by a newer version of the app."""
    from .ops.schema import SchemaTooNew, check_not_newer

    try:
        with db.engine.connect() as conn:
            check_not_newer(conn)
    except SchemaTooNew as err:
        raise click.ClickException(str(err)) from None
    click.echo("The database schema is one this version knows.")


@milo_cli.command("copy-to")
@click.argument("url")
def copy_to_command(url: str) -> None:
    """Copy every row of this database into the empty database at URL (e.g. SQLite → PostgreSQL).

    The target is migrated to this version's schema first; stop the app while it runs.
    """
    from .ops.copy import CopyError, copy_database

    db.session.remove()
    try:
        counts = copy_database(db.engine, url, echo=click.echo)
    except CopyError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"Copied {sum(counts.values()):,} rows in {len(counts)} tables. Point MILO_DATABASE_URL at the new "
               "database and start the app.")
