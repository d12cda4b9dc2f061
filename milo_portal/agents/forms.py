"""Forms for interview agents."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import IntegerField, SelectField, SelectMultipleField, StringField, TextAreaField, URLField
from wtforms.validators import ValidationError
from wtforms.validators import URL, DataRequired, Length, NumberRange, Optional

from ..forms_common import check_offsets, choices, parse_clock
from ..headers import one_line

ROLE_LEVEL_CHOICES = choices([
    ("entry", "Entry level / shift work"),
    ("professional", "Professional"),
    ("senior", "Senior"),
])
DAYS = [("1", "Mon"), ("2", "Tue"), ("3", "Wed"), ("4", "Thu"), ("5", "Fri"), ("6", "Sat"), ("7", "Sun")]
CHANNEL_CHOICES = choices([
    ("email", "E-mail"),
    ("sms", "SMS"),
    ("whatsapp", "WhatsApp"),
    ("link", "I'll send the link myself"),
])


class AgentForm(FlaskForm):
    # Both appear in e-mail subjects: one line, no control characters (filtered before validation).
    title = StringField("Role title", validators=[DataRequired(), Length(max=200)], filters=[one_line],
                        description="Shown to candidates, e.g. “Warehouse associate”.")
    company = StringField("Company name shown to candidates", validators=[DataRequired(), Length(max=200)],
                          filters=[one_line])
    role_level = SelectField("Role level", choices=ROLE_LEVEL_CHOICES, default="professional")
    description = TextAreaField(
        "Why this interview matters", validators=[Optional(), Length(max=5000)],
        description="A few sentences for candidates: what the role is and what happens next.",
    )
    duration_minutes = IntegerField("Expected duration (minutes)", default=15,
                                    validators=[DataRequired(), NumberRange(min=1, max=240)])
    deadline_days = IntegerField("Deadline (days after the invite)", default=7,
                                 validators=[DataRequired(), NumberRange(min=1, max=90)])
    default_channel = SelectField(
        "Default channel", choices=CHANNEL_CHOICES, default="email",
        description="Suggested: e-mail for professional roles, SMS for shift roles.",
    )
    external_url = URLField(
        "External interview URL (optional)",
        validators=[Optional(), URL(require_tld=False, message="Enter a full address starting with https://"),
                    Length(max=2000)],
        description="Leave empty to run the questions in Milo Portal.",
    )
    owner_id = SelectField("Owner", coerce=int, validate_choice=True)

    # Follow-up rules for this interview only; empty means "as in the team settings".
    window_start = StringField("Send window starts", validators=[Optional()], description="Empty: team setting.")
    window_end = StringField("Send window ends", validators=[Optional()])
    send_days = SelectMultipleField("Days messages may go", choices=choices(DAYS), coerce=str,
                                    validators=[Optional()], description="None ticked: team setting.")
    initial_send_days = SelectMultipleField("Days first invites may go", choices=choices(DAYS), coerce=str,
                                            validators=[Optional()])
    reminder_offsets_hours = StringField("Reminders, hours after the invite", validators=[Optional()],
                                         description="e.g. 24, 48. Empty: team setting.")
    nudge_lead_hours = IntegerField("Nudge, hours before the deadline", validators=[Optional(), NumberRange(min=1, max=336)])
    final_nudge_lead_hours = IntegerField("Final nudge, hours before (0: none)",
                                          validators=[Optional(), NumberRange(min=0, max=336)])
    followup_cap = IntegerField("Most follow-ups per candidate", validators=[Optional(), NumberRange(min=0, max=10)])

    def validate_window_start(self, field) -> None:
        parse_clock(field.data)
        if not self.window_end.data:
            raise ValidationError("Give both the start and the end, or neither.")

    def validate_window_end(self, field) -> None:
        if bool(field.data) != bool(self.window_start.data):
            raise ValidationError("Give both the start and the end, or neither.")
        if field.data and parse_clock(field.data) <= parse_clock(self.window_start.data):
            raise ValidationError("The window must end after it starts.")

    def validate_reminder_offsets_hours(self, field) -> None:
        check_offsets(self, field)


class NewAgentForm(AgentForm):
    questions = TextAreaField(
        "Questions (one per line, optional)", validators=[Optional(), Length(max=20000)],
        description="You can add, edit and reorder questions on the agent page too.",
    )


class QuestionForm(FlaskForm):
    text = TextAreaField("New question", validators=[DataRequired("Write the question first."), Length(max=1000)])
