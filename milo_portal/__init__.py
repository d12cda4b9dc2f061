"""Milo Portal: the application factory."""
from __future__ import annotations

import logging

from flask import Flask, render_template, request, url_for
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from sqlalchemy import event
from sqlalchemy.engine import Engine
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from .config import ROOT, Config
from .extensions import csrf, db, htmx, login_manager, mail, migrate

log = logging.getLogger(__name__)

# Endpoints reachable without logging in. Everything else is admin-only by default, so a
# new admin route cannot be left open by forgetting a decorator.
PUBLIC_BLUEPRINTS = {"public", "hooks"}
PUBLIC_ENDPOINTS = {"auth.login", "static", "healthz"}

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
)


def create_app(config_class=Config, **config_kwargs) -> Flask:
    """Build the Flask app: bind extensions, register blueprints, commands and handlers."""
    app = Flask(
        __name__,
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
        instance_path=str(ROOT / "instance"),
    )
    app.config.from_object(config_class(**config_kwargs))

    if app.config["MILO_TRUSTED_PROXIES"]:
        n = app.config["MILO_TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)

    db.init_app(app)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"), render_as_batch=True)
    login_manager.init_app(app)
    mail.init_app(app)
    csrf.init_app(app)
    htmx.init_app(app)

    _register_blueprints(app)
    _register_security(app)
    _register_error_handlers(app)
    _register_template_helpers(app)

    from .cli import milo_cli

    app.cli.add_command(milo_cli)

    from .followups.scheduler import init_scheduler

    init_scheduler(app)
    return app


@event.listens_for(Engine, "connect")
def _sqlite_on_connect(dbapi_connection, connection_record):
    """Turn on WAL, a busy timeout and foreign keys for every SQLite connection."""
    import sqlite3

    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    # Let SQLAlchemy issue BEGIN itself (see _sqlite_on_begin) instead of pysqlite.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Read the file through memory mapping (SQLite caps the size at its own maximum): a
    # page of a million-candidate list touches a few thousand pages spread over gigabytes,
    # and reading each through the 2 MB page cache costs more than the query itself.
    cursor.execute("PRAGMA mmap_size=8589934592")
    cursor.close()
    # lower() for the candidates search: SQLite's own folds only ASCII letters, the trigram
    # search index folds all of Unicode (see candidates.services.Search).
    dbapi_connection.create_function("milo_lower", 1, _lower, deterministic=True)


def _lower(value):
    return value.lower() if isinstance(value, str) else value


@event.listens_for(Engine, "begin")
def _sqlite_on_begin(conn):
    """Begin SQLite transactions IMMEDIATE: take the write lock up front.

    A deferred transaction that reads and later writes can fail with SQLITE_BUSY at the
    write, with no retry possible; IMMEDIATE waits (busy_timeout) for the lock instead.
    """
    if conn.dialect.name == "sqlite":
        # Long reads (CSV exports) opt out: a deferred read in WAL mode blocks no writer.
        read_only = conn.get_execution_options().get("milo_read_only")
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _register_blueprints(app: Flask) -> None:
    from .agents import bp as agents_bp
    from .auth import bp as auth_bp
    from .candidates import bp as candidates_bp
    from .hooks import bp as hooks_bp
    from .messaging import bp as messaging_bp
    from .outbox import bp as outbox_bp
    from .pages import bp as pages_bp
    from .public import bp as public_bp
    from .settings import bp as settings_bp

    for bp in (auth_bp, agents_bp, candidates_bp, messaging_bp, outbox_bp, settings_bp, pages_bp, public_bp, hooks_bp):
        app.register_blueprint(bp)

    @app.get("/healthz")
    def healthz():
        db.session.execute(db.text("SELECT 1"))
        return {"status": "ok"}


def _register_security(app: Flask) -> None:
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
        if request.endpoint and request.endpoint.startswith("public."):
            # Candidate pages carry a personal token in the URL: never cache them.
            response.headers.setdefault("Cache-Control", "no-store")
        return response


def _register_error_handlers(app: Flask) -> None:
    def render_error(code: int, title: str, message: str):
        public = bool(request.endpoint and request.endpoint.startswith("public."))
        if request.path.startswith(("/i/", "/s/", "/t/", "/u/", "/hooks/")):
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
