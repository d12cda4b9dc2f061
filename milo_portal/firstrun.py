"""Printed by ``make run`` before the server starts: how to log in the first time."""
from __future__ import annotations

from sqlalchemy import select

from . import create_app
from .extensions import db
from .models import User


def main() -> None:
    """Tell a first-time user how to create the first login, or where to log in."""
    app = create_app()
    with app.app_context():
        has_user = db.session.scalar(select(User.id).limit(1)) is not None
    print()
    print("  Milo Portal is starting on http://127.0.0.1:5000")
    if has_user:
        print("  Log in with your e-mail and password.")
    else:
        print("  No login exists yet. In another terminal, in this folder, run:")
        print("    .venv/bin/flask --app milo_portal milo create-admin you@example.com --name \"Your Name\"")
        print("  (or `... milo demo-data` for a demo team: dana@demo.milo.test / demo-password-1)")
    print()


if __name__ == "__main__":
    main()
