"""Forms of the Settings page's Retention and Backups sections."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, IntegerField
from wtforms.validators import InputRequired, NumberRange


class RetentionForm(FlaskForm):
    """How long personal data and the audit log are kept."""

    retention_days = IntegerField(
        "Keep a candidate's personal data for (days after they complete, expire or opt out)", default=180,
        validators=[InputRequired("Enter a number of days."), NumberRange(min=1, max=3650)],
        description="Then their name, e-mail, phone, answers and files are erased; anonymous events stay for the metrics.")
    audit_retention_days = IntegerField(
        "Keep audit log entries for (days)", default=730,
        validators=[InputRequired("Enter a number of days."), NumberRange(min=30, max=3650)])


class BackupForm(FlaskForm):
    """The nightly backup."""

    backup_enabled = BooleanField("Back the database up every night")
    backup_hour = IntegerField("At (hour, UTC)", default=2,
                               validators=[InputRequired("Enter an hour from 0 to 23."), NumberRange(min=0, max=23)])
    backup_keep = IntegerField("Keep the newest (backups)", default=7,
                               validators=[InputRequired("Enter how many backups to keep."), NumberRange(min=1, max=365)])
