"""Forms of the Settings page."""
from __future__ import annotations

import phonenumbers
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, IntegerField, SelectField, SelectMultipleField, StringField
from wtforms.validators import DataRequired, Length, NumberRange, Optional, ValidationError

from ..forms_common import check_offsets, explained_email, choices, clock, country_choices, parse_clock, timezone_choices, valid_timezone  # noqa: F401
from ..headers import one_line


def _none_if_blank(value: str | None) -> str | None:
    """An optional address left empty is stored as none: '' would be sent as an address."""
    return (value.strip() or None) if isinstance(value, str) else value


def _countries():
    return country_choices(phonenumbers.SUPPORTED_REGIONS)


class MessagingForm(FlaskForm):
    # Both end up in e-mail headers (subject, From): one line, no control characters.
    company_name = StringField("Company name", validators=[DataRequired(), Length(max=200)], filters=[one_line],
                               description="Used in messages when an interview does not name its own.")
    sender_name = StringField("Sender name", validators=[Optional(), Length(max=200)], filters=[one_line],
                              description="Shown as the From name of e-mails, e.g. “Acme Recruiting”.")
    sender_email = EmailField("Sender address", validators=[Optional(), explained_email, Length(max=254)],
                              filters=[_none_if_blank],
                              description="The From address; your mail server must be allowed to send as it.")
    reply_to = EmailField("Reply-to address", validators=[Optional(), explained_email, Length(max=254)],
                         filters=[_none_if_blank])
    support_email = EmailField("Support e-mail", validators=[Optional(), explained_email, Length(max=254)],
                               filters=[_none_if_blank],
                               description="Shown to candidates who need help, and available to templates.")
    support_phone = StringField("Support phone", validators=[Optional(), Length(max=40)], filters=[_none_if_blank])
    default_country = SelectField("Default country for phone numbers", choices=_countries)
    default_timezone = SelectField("Default time zone", choices=timezone_choices, validate_choice=False,
                                   validators=[valid_timezone])
    open_tracking = BooleanField("Record e-mail opens with an invisible image (approximate)")

    def validate_support_phone(self, field) -> None:
        if field.data:
            try:
                number = phonenumbers.parse(field.data, self.default_country.data or "US")
            except phonenumbers.NumberParseException:
                number = None
            if number is None or not phonenumbers.is_valid_number(number):
                raise ValidationError("This is not a valid phone number.")


DAY_CHOICES = [("1", "Mon"), ("2", "Tue"), ("3", "Wed"), ("4", "Thu"), ("5", "Fri"), ("6", "Sat"), ("7", "Sun")]


class TimingForm(FlaskForm):
    """The team's follow-up rules."""

    window_start = StringField("Send window starts", default="09:00", validators=[DataRequired()],
                               description="Candidate-local time.")
    window_end = StringField("Send window ends", default="18:00", validators=[DataRequired()],
                             description="23:59 for the end of the day.")
    send_days = SelectMultipleField("Days messages may go", choices=choices(DAY_CHOICES), coerce=str)
    initial_send_days = SelectMultipleField("Days first invites may go", choices=choices(DAY_CHOICES), coerce=str,
                                            description="Avoid Fridays: invites sent on a Friday are finished least often.")
    reminder_offsets_hours = StringField("Reminders, hours after the invite", default="24, 48",
                                         validators=[Optional(), check_offsets],
                                         description="Only to candidates who have not clicked yet. Empty: no reminders.")
    nudge_lead_hours = IntegerField("Nudge, hours before the deadline", default=24,
                                    validators=[NumberRange(min=1, max=24 * 14)])
    final_nudge_lead_hours = IntegerField("Final nudge, hours before the deadline (0: none)", default=2,
                                          validators=[NumberRange(min=0, max=24 * 14)])
    followup_cap = IntegerField("Most follow-ups per candidate", default=3, validators=[NumberRange(min=0, max=10)])
    min_spacing_auto_hours = IntegerField("Hours between two automatic messages", default=20,
                                          validators=[NumberRange(min=0, max=24 * 7)])
    min_spacing_manual_hours = IntegerField("Hours between messages a recruiter sends", default=1,
                                            validators=[NumberRange(min=0, max=24 * 7)])

    def validate_window_end(self, field) -> None:
        start = parse_clock(self.window_start.data or "")
        if parse_clock(field.data) <= start:
            raise ValidationError("The window must end after it starts.")

    def validate_window_start(self, field) -> None:
        parse_clock(field.data)

    def validate_send_days(self, field) -> None:
        if not field.data:
            raise ValidationError("Choose at least one day.")

    def validate_initial_send_days(self, field) -> None:
        if not field.data:
            raise ValidationError("Choose at least one day.")
