"""WSGI entry point: ``gunicorn wsgi:app``."""
from milo_portal import create_app
from milo_portal.config import Config
from milo_portal.ops.schema import refuse_newer_database

# Before the app and its scheduler start: a database upgraded by a newer version is never
# served (nor ticked on) by this one (see milo_portal/ops/schema.py).
refuse_newer_database(Config().SQLALCHEMY_DATABASE_URI)
app = create_app()
