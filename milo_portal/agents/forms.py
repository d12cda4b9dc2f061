"""Forms for interview agents."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import IntegerField, SelectField, StringField, TextAreaField, URLField
from wtforms.validators import URL, DataRequired, Length, NumberRange, Optional

from ..forms_common import choices

ROLE_LEVEL_CHOICES = choices([
    ("entry", "Entry level / shift work"),
    ("professional", "Professional"),
    ("senior", "Senior"),
])
CHANNEL_CHOICES = choices([
    ("email", "E-mail"),
    ("sms", "SMS"),
    ("whatsapp", "WhatsApp"),
    ("link", "I'll send the link myself"),
])


class AgentForm(FlaskForm):
    title = StringField("Role title", validators=[DataRequired(), Length(max=200)],
                        description="Shown to candidates, e.g. “Warehouse associate”.")
    company = StringField("Company name shown to candidates", validators=[DataRequired(), Length(max=200)])
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


class NewAgentForm(AgentForm):
    questions = TextAreaField(
        "Questions (one per line, optional)", validators=[Optional(), Length(max=20000)],
        description="You can add, edit and reorder questions on the agent page too.",
    )


class QuestionForm(FlaskForm):
    text = TextAreaField("New question", validators=[DataRequired("Write the question first."), Length(max=1000)])
