"""Shared fixtures: an app on a migrated database (SQLite, or PostgreSQL when
MILO_TEST_DATABASE_URL is set), clients that log in and carry the CSRF token, and small
factories for the domain objects."""
from __future__ import annotations

import os
import re
from datetime import datetime, timedelta, timezone

import pytest
from flask.testing import FlaskClient
from flask_migrate import upgrade
from sqlalchemy import text

from milo_portal import create_app
from milo_portal.config import TestConfig
from milo_portal.extensions import db
from milo_portal.models import Agent, Question, User

PASSWORD = "correct-horse-battery"
CSRF_RE = re.compile(r'"X-CSRFToken": "([^"]+)"|name="csrf_token" (?:type="hidden" )?value="([^"]+)"')


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> str:
    """The database every test uses: migrated once, emptied after each test."""
    url = os.environ.get("MILO_TEST_DATABASE_URL")
    if not url:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'milo-test.sqlite3'}"
    app = create_app(TestConfig, database_url=url)
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            with db.engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
        upgrade()
        db.engine.dispose()
    return url


def _empty_all_tables() -> None:
    tables = [t.name for t in reversed(db.metadata.sorted_tables)]
    if db.engine.dialect.name == "postgresql":
        db.session.execute(text(
            "TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"
        ))
    else:
        for table in tables:
            db.session.execute(text(f'DELETE FROM "{table}"'))
    # The rows the migrations make, as a fresh installation has them.
    from milo_portal.models import JobLease, Settings

    db.session.add_all([Settings(id=1)] + [JobLease(name=name) for name in ("planner", "daily", "backup")])
    db.session.commit()


@pytest.fixture()
def app(database_url):
    app = create_app(TestConfig, database_url=database_url)
    with app.app_context():
        yield app
        db.session.rollback()
        db.session.remove()
        _empty_all_tables()
        db.session.remove()
        db.engine.dispose()


class Client(FlaskClient):
    """Flask's test client, made to behave like separate HTTP requests:

    - the test's own session is committed first (so SQLite's write lock is free and the
      request sees what the test made), and each request runs in a fresh app context with
      its own database session, as it would in a server;
    - POSTs carry the session's CSRF token unless ``csrf=False``.
    """

    _token: str | None = None

    def open(self, *args, **kwargs):
        db.session.commit()
        with self.application.app_context():
            return super().open(*args, **kwargs)

    def csrf_token(self) -> str:
        if self._token is None:
            for path in ("/login", "/account"):
                body = self.get(path).get_data(as_text=True)
                match = CSRF_RE.search(body)
                if match:
                    self._token = match.group(1) or match.group(2)
                    break
            else:
                raise AssertionError("no CSRF token found on /login or /account")
        return self._token

    def post(self, url, data=None, csrf=True, **kwargs):
        if data is None or isinstance(data, dict):
            data = dict(data or {})
            if csrf and "csrf_token" not in data:
                data["csrf_token"] = self.csrf_token()
        return super().post(url, data=data, **kwargs)

    def htmx_post(self, url, data=None, **kwargs):
        headers = {**kwargs.pop("headers", {}), "HX-Request": "true"}
        return self.post(url, data, headers=headers, **kwargs)

    def htmx_get(self, url, **kwargs):
        headers = {**kwargs.pop("headers", {}), "HX-Request": "true"}
        return self.get(url, headers=headers, **kwargs)


@pytest.fixture()
def client(app) -> Client:
    app.test_client_class = Client
    return app.test_client()


@pytest.fixture()
def runner(app):
    return app.test_cli_runner()


def make_user(email: str = "rita@example.com", name: str = "Rita Recruiter", password: str = PASSWORD,
              active: bool = True) -> User:
    """Create and commit a user."""
    user = User(email=email, name=name, active=active)
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    return user


def make_agent(title: str = "Support specialist", questions=("Why us?", "A hard problem you solved?", "When can you start?"),
               **fields) -> Agent:
    """Create and commit an agent with questions."""
    agent = Agent(title=title, company=fields.pop("company", "Acme"), **fields)
    for i, q in enumerate(questions, start=1):
        agent.questions.append(Question(text=q, position=i))
    db.session.add(agent)
    db.session.commit()
    return agent


def make_due_invites(n: int, due: datetime, prefix: str = "p", title: str = "Picker") -> list[int]:
    """An agent with ``n`` candidates (UTC, e-mail) whose invites are due at ``due``; their ids.

    It commits and touches nothing after: on SQLite an open transaction here would hold the
    write lock that a dispatcher (another session or process) needs.
    """
    from milo_portal.models import Candidate, Message, MessageStatus

    agent = make_agent(title)
    people = [Candidate(agent_id=agent.id, name=f"{prefix.upper()}{i}", email=f"{prefix}{i}@example.com",
                        timezone="UTC", deadline_at=due + timedelta(days=5)) for i in range(n)]
    db.session.add_all(people)
    db.session.flush()
    ids = [c.id for c in people]
    db.session.add_all([Message(candidate_id=i, kind="invite", step=1, channel="email", scheduled_for=due,
                                status=MessageStatus.SCHEDULED) for i in ids])
    db.session.commit()
    return ids


class Auth:
    def __init__(self, client: Client):
        self.client = client

    def login(self, email: str = "rita@example.com", password: str = PASSWORD, next: str | None = None):
        url = "/login" + (f"?next={next}" if next else "")
        return self.client.post(url, {"email": email, "password": password})

    def logout(self):
        return self.client.post("/logout")


@pytest.fixture()
def user(app) -> User:
    return make_user()


@pytest.fixture()
def auth(client, user) -> Auth:
    """A logged-in client (as ``user``)."""
    helper = Auth(client)
    response = helper.login()
    assert response.status_code == 302, response.get_data(as_text=True)
    return helper


def at(iso: str) -> datetime:
    """An aware UTC instant from an ISO string (tests pick their instants)."""
    value = datetime.fromisoformat(iso)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def use_smtp(app, port: int, host: str = "127.0.0.1", timeout: int = 15) -> None:
    """Point the app's mail settings (and Flask-Mail's state) at a server on loopback."""
    app.config.update(MAIL_SERVER=host, MAIL_PORT=port, MILO_SMTP_TIMEOUT=timeout)
    state = app.extensions["mail"]
    state.server, state.port = host, port


@pytest.fixture()
def smtp(app):
    """A real SMTP server (aiosmtpd) on loopback that the app sends to."""
    from tests.servers import SmtpSink

    sink = SmtpSink().start()
    use_smtp(app, sink.port)
    yield sink
    sink.stop()


@pytest.fixture()
def team_settings(app):
    """Team settings with a sender identity, as after Settings → Messaging."""
    from milo_portal.settings.services import get_settings

    settings = get_settings(db.session)
    settings.company_name = "Acme"
    settings.sender_name = "Acme Recruiting"
    settings.sender_email = "jobs@acme.example"
    settings.reply_to = "talent@acme.example"
    settings.support_email = "help@acme.example"
    db.session.commit()
    return settings
