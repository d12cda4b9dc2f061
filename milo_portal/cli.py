"""``flask milo ...`` commands: thin wrappers over services."""
from __future__ import annotations

import sys

import click
from flask.cli import AppGroup
from sqlalchemy import select

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
def demo_data(count: int, days: int, seed: int) -> None:
    """Fill the database with a demo team, interview agents and candidates with their events."""
    import time

    from .clock import now
    from .demo import create_demo_candidates, create_demo_data

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
