"""Forms for logging in and managing accounts."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, Email, EqualTo, Length

from ..forms_common import timezone_choices, valid_timezone
from .services import MIN_PASSWORD_LENGTH


class LoginForm(FlaskForm):
    email = EmailField("E-mail", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired()])
    remember = BooleanField("Keep me logged in on this computer")


class TeammateForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=120)])
    email = EmailField("E-mail", validators=[DataRequired(), Email(check_deliverability=False), Length(max=254)])
    password = PasswordField(
        "First password", validators=[DataRequired(), Length(min=MIN_PASSWORD_LENGTH)],
        description="Give it to them by a separate channel; they can change it after logging in.",
    )


class ResetPasswordForm(FlaskForm):
    password = PasswordField("New password", validators=[DataRequired(), Length(min=MIN_PASSWORD_LENGTH)])


class ChangePasswordForm(FlaskForm):
    current = PasswordField("Current password", validators=[DataRequired()])
    password = PasswordField("New password", validators=[DataRequired(), Length(min=MIN_PASSWORD_LENGTH)])
    confirm = PasswordField(
        "Repeat new password", validators=[DataRequired(), EqualTo("password", "The passwords differ.")]
    )


class ProfileForm(FlaskForm):
    name = StringField(
        "Name", validators=[DataRequired(), Length(max=120)],
        description="Used to sign the messages candidates receive from you.",
    )
    timezone = SelectField("Your time zone", choices=timezone_choices, validators=[valid_timezone],
                           validate_choice=False)


class EmptyForm(FlaskForm):
    """A form with only the CSRF token, for buttons that post an action."""
