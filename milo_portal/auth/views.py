"""Login, logout, the Team page and the user's own account page."""
from __future__ import annotations

from datetime import timedelta
from itertools import groupby
from urllib.parse import urlsplit

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user
from sqlalchemy import select

from .. import audit
from ..clock import now
from ..errors import DomainError
from ..extensions import db, login_manager
from ..models import User, UserSession
from . import bp, services, sessions
from .forms import ChangePasswordForm, LoginForm, ProfileForm, ResetPasswordForm, TeammateForm

login_manager.login_view = "auth.login"
login_manager.login_message = "Please log in to continue."
login_manager.login_message_category = "info"


@login_manager.user_loader
def load_user(token: str) -> User | None:
    """Find the user of a live server-side session (from either cookie), or None."""
    instant = now()
    row = sessions.find_session(db.session, token, instant)
    if row is None:
        return None
    sessions.touch(db.session, row, instant, _policy(), _address())
    user = row.user
    user.login_token, user.login_session_id = token, row.id
    return user


def _address() -> str:
    """The client's address (the proxy's X-Forwarded-For only from a trusted proxy)."""
    return request.remote_addr or "unknown"


def safe_next(target: str | None, default: str | None = None) -> str:
    """Return ``target`` if it is a path on this site, else ``default`` (the dashboard)."""
    default = default or url_for("agents.index")
    if not target:
        return default
    target = target.strip().replace("\\", "/")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in target):
        return default  # browsers drop tabs and newlines: "/\t/evil" would become "//evil"
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


def get_user_session(session_id: int) -> UserSession:
    """The one place that turns a session id from a URL into a session row, or 404."""
    row = db.session.get(UserSession, session_id)
    if row is None:
        abort(404)
    return row


def _limits() -> services.ThrottleLimits:
    cfg = current_app.config
    return services.ThrottleLimits(
        free_failures=cfg["MILO_LOGIN_FREE_FAILURES"],
        max_delay=timedelta(minutes=cfg["MILO_LOGIN_MAX_DELAY_MINUTES"]),
        window=timedelta(minutes=cfg["MILO_LOGIN_WINDOW_MINUTES"]),
        per_address=cfg["MILO_LOGIN_MAX_PER_ADDRESS"],
    )


def _policy() -> sessions.SessionPolicy:
    cfg = current_app.config
    return sessions.SessionPolicy(idle=timedelta(hours=cfg["MILO_SESSION_IDLE_HOURS"]),
                                  remember=cfg["REMEMBER_COOKIE_DURATION"])


def _audit(actor, kind: str, detail: str) -> None:
    """Record an account event in the audit log, with the client's address, and commit it."""
    audit.record(db.session, actor, kind, detail, address=_address(), now=now())
    db.session.commit()


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(safe_next(request.args.get("next")))
    form = LoginForm()
    no_users = db.session.scalar(select(User.id).limit(1)) is None
    status = 200
    if form.validate_on_submit():
        try:
            user = services.log_in(
                db.session, form.email.data, form.password.data, _address(),
                request.headers.get("User-Agent"), bool(form.remember.data), now(), _limits(), _policy(),
            )
        except services.LoginThrottled as err:
            form.form_errors.append(err.message)
            status = 429
        except DomainError as err:
            form.form_errors.append(err.message)
            _audit(None, "login_failed", f"as {form.email.data}")
        else:
            _audit(user, "login", "")
            login_user(user, remember=bool(form.remember.data))
            return redirect(safe_next(request.args.get("next")))
    form.remember.description = (f"For {current_app.config['MILO_REMEMBER_DAYS']} days at most, or until you "
                                 "log out; the Team page can end it too.")
    return render_template("auth/login.html", form=form, no_users=no_users), status


@bp.post("/logout")
def logout():
    if current_user.is_authenticated:
        sessions.revoke(db.session, get_user_session(current_user.login_session_id), now())
        _audit(current_user, "logout", "")
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
            _audit(current_user, "team_added", f"{user.name} <{user.email}> (user {user.id})")
            flash(f"{user.name} can now log in with {user.email}.", "success")
            return redirect(url_for("auth.team"))
    users = db.session.scalars(select(User).order_by(User.active.desc(), User.name)).all()
    live = {user_id: list(rows) for user_id, rows in
            groupby(sessions.live_sessions(db.session, now()), key=lambda row: row.user_id)}
    return render_template("auth/team.html", form=form, users=users,
                           reset_form=ResetPasswordForm(), live=live)


def _after_ending(own: bool, message: str):
    """Go back to the Team page, or to the login page when this very session ended."""
    if own:
        logout_user()
        flash(message + " You are logged out.", "info")
        return redirect(url_for("auth.login"))
    flash(message, "success")
    return redirect(url_for("auth.team"))


@bp.post("/team/sessions/<int:session_id>/revoke")
def revoke_session(session_id: int):
    row = get_user_session(session_id)
    sessions.revoke(db.session, row, now())
    _audit(current_user, "team_sessions", f"one session of {row.user.name} (user {row.user_id}) ended")
    return _after_ending(row.id == current_user.login_session_id,
                         f"That session of {row.user.name} has ended.")


@bp.post("/team/<int:user_id>/sessions/revoke")
def log_out_everywhere(user_id: int):
    user = get_user(user_id)
    own = user.id == current_user.id
    count = services.log_out_everywhere(db.session, user, now())
    _audit(current_user, "team_sessions", f"{user.name} (user {user.id}) logged out everywhere: {count} session(s)")
    return _after_ending(own, f"{user.name} is logged out everywhere ({count} session{'s' if count != 1 else ''}).")


@bp.post("/team/<int:user_id>/password")
def reset_password(user_id: int):
    user = get_user(user_id)
    form = ResetPasswordForm()
    if form.validate_on_submit():
        try:
            services.set_password(db.session, user, form.password.data, now(),
                                  keep=current_user.login_session_id if user.id == current_user.id else None)
        except DomainError as err:
            flash(err.message, "error")
        else:
            _audit(current_user, "team_password", f"new password set for {user.name} (user {user.id})")
            flash(f"New password set for {user.name}. Their other sessions have ended.", "success")
    else:
        for errors in form.errors.values():
            for e in errors:
                flash(f"Password for {user.name} not changed: {e}", "error")
    return redirect(url_for("auth.team"))


@bp.post("/team/<int:user_id>/active")
def set_active(user_id: int):
    user = get_user(user_id)
    active = request.form.get("active") == "1"
    try:
        services.set_active(db.session, user, active, current_user, now())
    except DomainError as err:
        flash(err.message, "error")
    else:
        _audit(current_user, "team_active", f"{user.name} (user {user.id}) {'activated' if active else 'deactivated'}")
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
                services.set_password(db.session, current_user, password.password.data, now(),
                                      keep=current_user.login_session_id)
            except DomainError as err:
                password.password.errors.append(err.message)
            else:
                _audit(current_user, "team_password", "changed their own password")
                flash("Your password is changed. Other sessions have been logged out.", "success")
                return redirect(url_for("auth.account"))
    return render_template("auth/account.html", profile=profile, password=password)
