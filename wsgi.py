"""WSGI entry point: ``gunicorn wsgi:app``."""
from milo_portal import create_app

app = create_app()
