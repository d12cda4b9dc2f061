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
@click.option("--seed", default=1, show_default=True, help="Random seed, for repeatable data.")
def demo_data(count: int, seed: int) -> None:
    """Fill the database with a demo team, interview agents and candidates with their events."""
    import time

    from .clock import now
    from .demo import create_demo_candidates, create_demo_data

    click.echo(create_demo_data(db.session, seed=seed))
    started = time.monotonic()
    made = create_demo_candidates(db.session, count, seed, now())
    click.echo(f"{made} demo candidates with their events in {time.monotonic() - started:.1f} s.")
