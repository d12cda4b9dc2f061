"""Reading and changing the operations settings row (id 1, made by the migrations)."""
from __future__ import annotations

from flask import current_app
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..models import OpsSettings
from .forms import BackupForm, RetentionForm


def default_ops_settings() -> OpsSettings:
    """A detached OpsSettings with every column's default, for a database that lost its row."""
    row = OpsSettings(id=1)
    for column in OpsSettings.__table__.columns:
        if column.default is not None and column.default.is_scalar:
            setattr(row, column.key, column.default.arg)
    return row


def get_ops_settings(session: Session) -> OpsSettings:
    """The operations settings for reading; the defaults (not added) if the row is missing."""
    return session.get(OpsSettings, 1) or default_ops_settings()


def ops_settings_for_update(session: Session) -> OpsSettings:
    """The operations settings row to change (made if missing); the caller commits."""
    row = session.get(OpsSettings, 1)
    if row is None:
        try:
            with session.begin_nested():
                row = default_ops_settings()
                session.add(row)
        except IntegrityError:  # another process made it first
            row = session.get(OpsSettings, 1)
    return row


def settings_context(session, retention_form: RetentionForm | None = None,
                     backup_form: BackupForm | None = None) -> dict:
    """What the Settings page's Retention and Backups sections show."""
    row = get_ops_settings(session)
    return {
        "retention_form": retention_form or RetentionForm(formdata=None, obj=row, prefix="r"),
        "backup_form": backup_form or BackupForm(formdata=None, obj=row, prefix="b"),
        "ops_settings": row,
        "backup_dir": current_app.config["MILO_BACKUP_DIR"],
    }
