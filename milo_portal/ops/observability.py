"""Wiring the operations parts into the app: request logs and the template helper."""
from __future__ import annotations

from flask import Flask

from .logs import init_request_logs


def init_ops(app: Flask) -> None:
    """Structured request logs, and ``retention_erasure(candidate)`` for the candidate page."""
    init_request_logs(app)

    def retention_erasure(candidate):
        from ..extensions import db
        from .retention import erasure_due_at
        from .settings import get_ops_settings

        return erasure_due_at(db.session, candidate, get_ops_settings(db.session).retention_days)

    app.jinja_env.globals["retention_erasure"] = retention_erasure
