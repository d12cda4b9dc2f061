"""Login, logout, the Team page and the user's own account page."""
from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user
from sqlalchemy import select

from ..clock import now
from ..errors import DomainError
from ..extensions import db, login_manager
from ..models import User
from . import bp, services
from .forms import ChangePasswordForm, EmptyForm, LoginForm, ProfileForm, ResetPasswordForm, TeammateForm

login_manager.login_view = "auth.login"
login_manager.login_message = "Please log in to continue."
login_manager.login_message_category = "info"


@login_manager.user_loader
def load_user(session_token: str) -> User | None:
    """Find the logged-in user by session token; inactive users are logged out."""
    user = db.session.scalar(select(User).where(User.session_token == session_token))
    if user is None or not user.active:
        return None
    return user


def safe_next(target: str | None) -> str:
    """Return ``target`` if it is a path on this site, else the dashboard."""
    default = url_for("agents.index")
    if not target:
        return default
    target = target.strip().replace("\\", "/")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return default
    return target


def get_user(user_id: int) -> User:
    """The one place that turns a user id from a URL into a user, or 404."""
    user = db.session.get(User, user_id)
    if user is None:
        abort(404)
    return user


def _limits() -> services.ThrottleLimits:
    cfg = current_app.config
    return services.ThrottleLimits(
        window=timedelta(minutes=cfg["MILO_LOGIN_WINDOW_MINUTES"]),
        per_account=cfg["MILO_LOGIN_MAX_PER_ACCOUNT"],
        per_address=cfg["MILO_LOGIN_MAX_PER_ADDRESS"],
    )


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(safe_next(request.args.get("next")))
    form = LoginForm()
    no_users = db.session.scalar(select(User.id).limit(1)) is None
    if form.validate_on_submit():
        try:
            user = services.authenticate(
                db.session, form.email.data, form.password.data,
                request.remote_addr or "unknown", now(), _limits(),
            )
        except DomainError as err:
            form.form_errors.append(err.message)
        else:
            login_user(user, remember=form.remember.data)
            return redirect(safe_next(request.args.get("next")))
    status = 429 if any("Too many" in e for e in form.form_errors) else 200
    return render_template("auth/login.html", form=form, no_users=no_users), status


@bp.post("/logout")
def logout():
    logout_user()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/team", methods=["GET", "POST"])
def team():
    form = TeammateForm()
    if form.validate_on_submit():
        try:
            user = services.create_user(db.session, form.email.data, form.name.data, form.password.data)
        except DomainError as err:
            getattr(form, err.field or "email").errors.append(err.message)
        else:
            flash(f"{user.name} can now log in with {user.email}.", "success")
            return redirect(url_for("auth.team"))
    users = db.session.scalars(select(User).order_by(User.active.desc(), User.name)).all()
    return render_template("auth/team.html", form=form, users=users, action_form=EmptyForm(),
                           reset_form=ResetPasswordForm())


@bp.post("/team/<int:user_id>/password")
def reset_password(user_id: int):
    user = get_user(user_id)
    form = ResetPasswordForm()
    if form.validate_on_submit():
        try:
            services.set_password(db.session, user, form.password.data)
        except DomainError as err:
            flash(err.message, "error")
        else:
            flash(f"New password set for {user.name}. Their other sessions have ended.", "success")
    else:
        for errors in form.errors.values():
            for e in errors:
                flash(f"Password for {user.name} not changed: {e}", "error")
    return redirect(url_for("auth.team"))


@bp.post("/team/<int:user_id>/active")
def set_active(user_id: int):
    user = get_user(user_id)
    form = EmptyForm()
    if not form.validate_on_submit():
        abort(400)
    active = request.form.get("active") == "1"
    try:
        services.set_active(db.session, user, active, current_user)
    except DomainError as err:
        flash(err.message, "error")
    else:
        flash(f"{user.name} is {'active again' if active else 'deactivated and logged out'}.", "success")
    return redirect(url_for("auth.team"))


@bp.route("/account", methods=["GET", "POST"])
def account():
    profile = ProfileForm(prefix="profile", obj=current_user)
    password = ChangePasswordForm(prefix="pw")
    if "profile-name" in request.form and profile.validate_on_submit():
        services.update_profile(db.session, current_user, profile.name.data, profile.timezone.data)
        flash("Your details are saved.", "success")
        return redirect(url_for("auth.account"))
    if "pw-current" in request.form and password.validate_on_submit():
        if not current_user.check_password(password.current.data):
            password.current.errors.append("This is not your current password.")
        else:
            try:
                services.set_password(db.session, current_user, password.password.data)
            except DomainError as err:
                password.password.errors.append(err.message)
            else:
                login_user(current_user)  # the session token changed: keep this session
                flash("Your password is changed. Other sessions have been logged out.", "success")
                return redirect(url_for("auth.account"))
    return render_template("auth/account.html", profile=profile, password=password)
