"""Forms of the Settings page."""
from __future__ import annotations

import phonenumbers
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, SelectField, StringField
from wtforms.validators import DataRequired, Email, Length, Optional, ValidationError

from ..forms_common import choices, timezone_choices, valid_timezone


def _countries():
    names = sorted(phonenumbers.SUPPORTED_REGIONS)
    return choices((code, code) for code in names)


class MessagingForm(FlaskForm):
    company_name = StringField("Company name", validators=[DataRequired(), Length(max=200)],
                               description="Used in messages when an interview does not name its own.")
    sender_name = StringField("Sender name", validators=[Optional(), Length(max=200)],
                              description="Shown as the From name of e-mails, e.g. “Acme Recruiting”.")
    sender_email = EmailField("Sender address", validators=[Optional(), Email(check_deliverability=False), Length(max=254)],
                              description="The From address; your mail server must be allowed to send as it.")
    reply_to = EmailField("Reply-to address", validators=[Optional(), Email(check_deliverability=False), Length(max=254)])
    support_email = EmailField("Support e-mail", validators=[Optional(), Email(check_deliverability=False), Length(max=254)],
                               description="Shown to candidates who need help, and available to templates.")
    support_phone = StringField("Support phone", validators=[Optional(), Length(max=40)])
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
