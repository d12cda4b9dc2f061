"""Forms for adding and editing candidates."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, DateField, EmailField, HiddenField, IntegerField, SelectField, StringField, TelField
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from ..agents.forms import CHANNEL_CHOICES
from ..forms_common import choices, timezone_choices


class ContactForm(FlaskForm):
    name = StringField("Name", validators=[Length(max=200)])
    email = EmailField("E-mail", validators=[Optional(), Length(max=254)])
    phone = TelField("Phone", validators=[Optional(), Length(max=40)],
                     description="With the country code, unless it is in the team's default country.")
    timezone = SelectField("Time zone", choices=timezone_choices, validate_choice=False,
                           description="Messages go out during their working hours. Filled in from the phone number when it is clear.")
    channel = SelectField("Invite by", choices=CHANNEL_CHOICES, default="email")


class AddCandidateForm(ContactForm):
    agent_id = SelectField("Interview", coerce=int)
    deadline = DateField("Deadline", validators=[Optional()],
                         description="The last day to finish, in the candidate's time zone. Empty: the interview's "
                                     "number of days, counted from the day the invite goes.")
    invite_now = BooleanField("Invite (at the next allowed time)", default=True)
    timezone_touched = HiddenField(default="")


class DeadlineForm(FlaskForm):
    deadline = DateField("New deadline", validators=[DataRequired("Pick a date.")])


class BulkForm(FlaskForm):
    action = SelectField("Action", choices=choices([("invite", "Send invite"), ("nudge", "Nudge"),
                                                    ("extend", "Extend deadline"), ("export", "Export CSV")]))
    extend_days = IntegerField("Days", default=3, validators=[Optional(), NumberRange(min=1, max=90)])
