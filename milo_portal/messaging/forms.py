"""Forms of the template editor."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, IntegerField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, NumberRange, Optional


class TemplateForm(FlaskForm):
    subject = StringField("Subject", validators=[Optional(), Length(max=300)])
    body = TextAreaField("Message", validators=[DataRequired("Write the message first."), Length(max=20000)])


class VariantOptionsForm(FlaskForm):
    weight = IntegerField("Weight", validators=[NumberRange(min=0, max=100)], default=1)
    active = BooleanField("In use", default=True)


class TestSendForm(FlaskForm):
    to = StringField("Send to", validators=[DataRequired("Where should the test go?"), Length(max=254)])
