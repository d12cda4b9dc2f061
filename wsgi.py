"""WSGI entry point: ``gunicorn wsgi:app``."""
import sys

from milo_portal import create_app
from milo_portal.config import Config, ConfigError
from milo_portal.ops.schema import refuse_newer_database

# Before the app and its scheduler start: a database upgraded by a newer version is never
# served (nor ticked on) by this one (see milo_portal/ops/schema.py).
try:
    config = Config()
except ConfigError as err:  # one line naming the variable, in gunicorn's log, not a stack trace
    print(f"Milo Portal cannot start: {err}", file=sys.stderr)
    raise SystemExit(2) from None
refuse_newer_database(config.SQLALCHEMY_DATABASE_URI)
app = create_app()
