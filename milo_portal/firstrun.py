"""Printed by ``make run`` before the server starts: how to log in the first time."""
from __future__ import annotations

import os

from sqlalchemy import select

from . import create_app
from .extensions import db
from .models import User


def main() -> None:
    """Tell a first-time user how to create the first login, or where to log in."""
    # Only a question to the database: this short-lived process must not start the scheduler
    # (a tick cut off by its exit would leave claimed messages to wait out their lease).
    os.environ["MILO_SCHEDULER"] = "0"
    app = create_app()
    with app.app_context():
        has_user = db.session.scalar(select(User.id).limit(1)) is not None
        db.session.remove()
        db.engine.dispose()  # close the connection now, not whenever the process lets go of it
    print()
    print(f"  Milo Portal is starting on http://127.0.0.1:{os.environ.get('PORT') or 5000}")
    if has_user:
        print("  Log in with your e-mail and password.")
    else:
        print("  No login exists yet. In another terminal, in this folder, run:")
        print("    .venv/bin/flask --app milo_portal milo create-admin you@example.com --name \"Your Name\"")
        print("  (or `... milo demo-data` for a demo team: dana@demo.milo.test / demo-password-1)")
    print()


if __name__ == "__main__":
    main()
