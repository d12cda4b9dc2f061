"""Milo Portal: the application factory."""
from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import sys

import click
from flask import Flask, Response, render_template, request, url_for
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from .compression import init_compression
from .config import ROOT, Config, ConfigError
from .extensions import csrf, db, htmx, login_manager, mail, migrate
from . import transactions  # noqa: F401  (the SQLite connect/begin rules: see that module)
from .proxy import TrustedProxyFix
from .request_input import (IdConverter, UnstorableInput, forget_malformed_remember_cookie, host_is_invalid,
                            refuse_invalid_host, refuse_unstorable_input)

log = logging.getLogger(__name__)

# Endpoints reachable without logging in. Everything else is admin-only by default, so a
# new admin route cannot be left open by forgetting a decorator.
PUBLIC_BLUEPRINTS = {"public", "hooks", "api"}
# /ops/metrics checks its own access (a login, or the scrape token): see ops.views.
PUBLIC_ENDPOINTS = {"auth.login", "static", "healthz", "ops.prometheus"}
# URL prefixes of the public surface: their responses (errors included) are never cached.
PUBLIC_PREFIXES = ("/i/", "/s/", "/t/", "/u/", "/hooks/", "/api/v1/")

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
)


def _serving_from_flask_run() -> bool:
    """Whether this app is being built for the `flask run` server."""
    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.command.name == "run"


def create_app(config_class=Config, **config_kwargs) -> Flask:
    """Build the Flask app: bind extensions, register blueprints, commands and handlers."""
    app = Flask(
        __name__,
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
        instance_path=str(ROOT / "instance"),
    )
    try:
        app.config.from_object(config_class(**config_kwargs))
    except ConfigError as err:
        if config_class is not Config:
            raise  # a test's or a script's own configuration: let it see the error
        # The operator's environment: one line naming the variable, not a stack trace.
        print(f"Milo Portal cannot start: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    transactions.init_checkpointer(app)  # before any connection is made
    if _serving_from_flask_run():
        # `flask run` builds the app here (gunicorn goes through wsgi.py, which checks first):
        # a database a newer version has upgraded is never served nor ticked on.
        from .ops.schema import refuse_newer_database

        refuse_newer_database(app.config["SQLALCHEMY_DATABASE_URI"])
        # werkzeug's request lines would print each candidate's link token; the app's own
        # JSON request log (the URL rule, never the token) covers every request.
        from .ops.logs import quiet_dev_server

        quiet_dev_server()

    if app.config["MILO_TRUSTED_PROXIES"]:
        app.wsgi_app = TrustedProxyFix(
            app.wsgi_app, app.config["MILO_TRUSTED_PROXIES"], app.config["MILO_TRUSTED_PROXY_ADDRESSES"]
        )

    db.init_app(app)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"), render_as_batch=True)
    # Templates get ``current_user`` as the lazy proxy, not loaded up front as Flask-Login's
    # own context processor does: candidate pages never show it, and loading it read the
    # session on every one of them.
    login_manager.init_app(app, add_context_processor=False)
    app.context_processor(lambda: {"current_user": current_user})
    mail.init_app(app)
    csrf.init_app(app)
    htmx.init_app(app)

    # Every <int:...> in a route is an id or a position: bound it to what the database can
    # hold (must be set before the blueprints add their rules).
    app.url_map.converters["int"] = IdConverter
    _register_blueprints(app)
    _register_security(app)
    _register_error_handlers(app)
    _register_template_helpers(app)
    init_compression(app)
    from .ops.observability import init_ops

    init_ops(app)

    from .cli import milo_cli

    app.cli.add_command(milo_cli)

    from .followups.scheduler import init_scheduler

    init_scheduler(app)
    return app


# Each area's package only defines its blueprint; its views are imported here, so a service
# of one area can import another area's services without pulling in (and cycling through)
# the views of both.
AREAS = ("auth", "agents", "candidates", "messaging", "outbox", "settings", "pages", "metrics", "public", "hooks",
         "api", "integrations", "imports", "audit", "ops")


def _register_blueprints(app: Flask) -> None:
    for area in AREAS:
        package = importlib.import_module(f".{area}", __name__)
        if importlib.util.find_spec(f"{__name__}.{area}.views") is not None:
            importlib.import_module(f".{area}.views", __name__)
        app.register_blueprint(package.bp)

    @app.get("/healthz")
    def healthz():
        from .clock import now
        from .ops import health

        cfg = app.config
        found = health.check(db.session, now(), cfg["MILO_HEALTH_MAX_TICK_AGE"], cfg["MILO_SCHEDULER"])
        return health.as_json(found), 200 if found.ok else 503


def _register_security(app: Flask) -> None:
    # The input guards run before every other before_request function (CSRF's included):
    # an error page rendered for any of them loads the user, i.e. reads the remember cookie.
    app.before_request_funcs.setdefault(None, [])[:0] = [
        forget_malformed_remember_cookie, refuse_invalid_host, refuse_unstorable_input]

    @app.before_request
    def require_login():
        endpoint = request.endpoint or ""
        if endpoint in PUBLIC_ENDPOINTS or endpoint.split(".")[0] in PUBLIC_BLUEPRINTS:
            return None
        if request.endpoint is None:  # a 404 is a 404, logged in or not
            return None
        if not current_user.is_authenticated:
            if request.htmx:
                # A fragment request after the session ended: send the whole page to login
                # rather than swapping the login form into a corner of the page.
                return "", 200, {"HX-Redirect": url_for("auth.login", next=request.full_path.rstrip("?"))}
            return login_manager.unauthorized()
        return None

    @app.after_request
    def security_headers(response):
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        if (request.endpoint or "").startswith("public.") or request.path.startswith(PUBLIC_PREFIXES):
            # Candidate pages carry a personal token in the URL: never cache them, nor their
            # error pages (a 404 or 405 has no endpoint but the same kind of address).
            response.headers.setdefault("Cache-Control", "no-store")
        return response


def _register_error_handlers(app: Flask) -> None:
    def render_error(code: int, title: str, message: str):
        if host_is_invalid():
            # Werkzeug could not IDNA-encode the Host (a label over 63 characters, an empty
            # label...), so Flask has no URL adapter and url_for, which the styled page
            # needs, would crash. Whatever went wrong, the answer is a plain 400.
            return Response("Bad request: invalid Host header.\n", 400, mimetype="text/plain")
        if request.path.startswith("/api/"):
            # The API answers in JSON only, its errors too (RFC 9457 problem details).
            problem = {"type": "about:blank", "title": title, "status": code, "detail": message}
            return Response(json.dumps(problem), code, mimetype="application/problem+json")
        public = bool(request.endpoint and request.endpoint.startswith("public."))
        if request.path.startswith(PUBLIC_PREFIXES):
            public = True
        return render_template(
            "errors/error.html", code=code, title=title, message=message, public=public
        ), code

    @app.errorhandler(CSRFError)
    def csrf_error(error):
        if request.htmx:
            # The page's token is stale (a new session): reload it to get a fresh one.
            return "", 400, {"HX-Refresh": "true"}
        return render_error(
            400, "Form expired",
            "This form was open too long or came from another page. Go back, reload and try again.",
        )

    @app.errorhandler(UnstorableInput)
    def unstorable_input(error: UnstorableInput):
        return render_error(400, "Bad request", error.description)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        messages = {
            400: ("Bad request", "The request could not be understood."),
            403: ("Not allowed", "You do not have access to this page."),
            404: ("Not found", "There is nothing at this address."),
            405: ("Not allowed", "This action cannot be done this way."),
            413: ("Too large", "The upload is larger than this server accepts."),
        }
        title, message = messages.get(error.code, (error.name, error.description or ""))
        return render_error(error.code or 500, title, message)

    @app.errorhandler(Exception)
    def server_error(error: Exception):
        log.exception("Unhandled error on %s %s", request.method, request.path)
        db.session.rollback()
        return render_error(
            500, "Something went wrong",
            "The error has been logged. Nothing you saved before this was lost; please try again.",
        )


def _register_template_helpers(app: Flask) -> None:
    from .formatting import register_filters

    register_filters(app)
