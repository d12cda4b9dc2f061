"""``flask milo copy-to URL``: a SQLite database filled through the app's own paths (demo data,
a bulk upload, the API, an integration webhook, outbound events, logins and the audit log)
is copied into an empty PostgreSQL database, and the app then runs on the copy.

The target is ``MILO_TEST_POSTGRES_URL``, a throwaway database this test wipes (``.ci/run``
sets it in both halves). Outside CI a missing URL skips the test; in CI it fails it.
"""
from __future__ import annotations

import io
import os

import pytest
from flask_migrate import upgrade
from sqlalchemy import create_engine, func, select, text

from milo_portal import create_app
from milo_portal.clock import now
from milo_portal.config import TestConfig, normalise_database_url
from milo_portal.extensions import db
from milo_portal.models import Agent, Candidate, ImportBatch
from milo_portal.ops.copy import FILLED_BY_TRIGGERS
from tests.conftest import Auth, Client, make_user
from tests.imports_files import csv_bytes
from tests.test_webhooks import Hook, _payload

TARGET = os.environ.get("MILO_TEST_POSTGRES_URL", "")
# Tables a real installation fills in the first weeks; each must hold rows before the copy, so
# the test proves the copy of every kind of row (the others are compared too, empty or not).
FILLED = ("user", "login_attempt", "user_session", "agent", "question", "candidate", "candidate_count",
          "agent_funnel_count", "event",
          "answer", "message", "template", "import_batch", "api_key", "api_idempotency", "integration",
          "integration_job", "integration_delivery", "external_ref", "webhook_receipt", "candidate_file",
          "webhook_endpoint", "webhook_delivery", "audit_entry", "settings", "job_lease", "ops_settings")


@pytest.fixture()
def target_url() -> str:
    """The empty PostgreSQL database to copy into (its public schema is dropped and made again)."""
    if not TARGET:
        if os.environ.get("CI"):
            pytest.fail("MILO_TEST_POSTGRES_URL is not set: .ci/run must point it at a throwaway database")
        pytest.skip("set MILO_TEST_POSTGRES_URL to a throwaway PostgreSQL database to test copy-to")
    engine = create_engine(normalise_database_url(TARGET))
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return TARGET


@pytest.fixture()
def source(tmp_path, monkeypatch):
    """An app on its own migrated SQLite database (whatever database the rest of the suite uses)."""
    monkeypatch.setenv("MILO_SECRET_KEY", "x" * 32)  # copy-to migrates the target in a child process
    app = create_app(TestConfig, database_url=f"sqlite:///{tmp_path / 'source.sqlite3'}")
    app.config["MILO_IMPORT_DIR"] = str(tmp_path / "imports")
    app.test_client_class = Client
    with app.app_context():
        upgrade()
        yield app
        db.session.remove()
        db.engine.dispose()


def _fill(app) -> None:
    from milo_portal.api import services as keys
    from milo_portal.demo import create_demo_candidates, create_demo_data
    from milo_portal.integrations import services as integrations

    moment = now()
    create_demo_data(db.session, seed=3)
    create_demo_candidates(db.session, 120, 3, moment, days=30)
    db.session.commit()
    make_user()
    client = app.test_client()
    auth = Auth(client)
    auth.login(password="a wrong password")  # a failed login: an attempt and an audit entry
    assert auth.login().status_code == 302
    agent = db.session.scalars(select(Agent).order_by(Agent.id)).first()
    # A bulk upload, reviewed and confirmed by the recruiter.
    sheet = csv_bytes([["Name", "Email"]] + [[f"Bulk {i}", f"bulk{i}@example.com"] for i in range(12)])
    response = client.post("/candidates/uploads", {"agent_id": str(agent.id), "mode": "review", "channel": "email",
                                                   "invite": "1", "files": [(io.BytesIO(sheet), "people.csv")]},
                           content_type="multipart/form-data")
    assert response.status_code == 303, response.get_data(as_text=True)
    done = client.post(response.headers["Location"] + "/confirm", {"channel": "email", "invite": "1"})
    assert done.status_code == 303
    # The API, with an idempotency key.
    _key, raw = keys.create_key(db.session, "Copy test", moment, None)
    db.session.commit()
    for i in range(3):
        r = client.open(f"/api/v1/agents/{agent.id}/candidates", method="POST",
                        json={"name": f"Api {i}", "email": f"api{i}@example.com"},
                        headers={"Authorization": f"Bearer {raw}", "Idempotency-Key": f"k{i}"})
        assert r.status_code == 201, r.get_data(as_text=True)
    # An integration (Indeed: with a resume file) and an outbound endpoint that hears the adds.
    integrations.create_endpoint(db.session, "https://hooks.example.com/milo", None, False, moment)
    db.session.commit()
    hook = Hook(client, "indeed", agent)
    for i in range(2):
        r = hook.send(_payload("indeed", email=f"indeed{i}@example.com", event=f"evt-{i}"), event=f"evt-{i}")
        assert r.status_code == 201, r.get_data(as_text=True)
    db.session.commit()


def _counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar()
                for t in db.metadata.sorted_tables}


def _tally(engine) -> dict[tuple, int]:
    """The list counts (what the triggers keep) summed per agent, stage, source and channel."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT agent_id, stage, source, channel, SUM(n) FROM candidate_count "
                                 "GROUP BY agent_id, stage, source, channel HAVING SUM(n) <> 0"))
        return {tuple(r[:4]): int(r[4]) for r in rows}


def _funnel_tally(engine) -> dict[tuple, int]:
    """The agents' funnel counts (what the triggers keep) summed per agent, invited and reached."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT agent_id, invited, reached, SUM(n) FROM agent_funnel_count "
                                 "GROUP BY agent_id, invited, reached HAVING SUM(n) <> 0"))
        return {(r[0], bool(r[1]), r[2]): int(r[3]) for r in rows}


def _candidates_by_group(engine) -> dict[tuple, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT agent_id, stage, source, channel, COUNT(*) FROM candidate "
                                 "WHERE erased_at IS NULL GROUP BY agent_id, stage, source, channel"))
        return {tuple(r[:4]): int(r[4]) for r in rows}


def test_copy_to_moves_every_row_the_counts_and_the_sequences_to_postgresql(source, target_url):
    _fill(source)
    before = _counts(db.engine)
    assert [t for t in FILLED if not before[t]] == []
    assert db.session.scalars(select(ImportBatch.status)).all() == [ImportBatch.DONE]

    result = source.test_cli_runner().invoke(args=["milo", "copy-to", target_url])
    assert result.exit_code == 0, result.output
    assert "Copied" in result.output

    target = create_engine(normalise_database_url(target_url))
    try:
        after = _counts(target)
        # Every table holds the same number of rows, except the maintained counts, which the
        # target's triggers rebuilt as the candidates arrived: they must add up to the same figures.
        assert {t: n for t, n in after.items() if t not in FILLED_BY_TRIGGERS} == {
            t: n for t, n in before.items() if t not in FILLED_BY_TRIGGERS}
        assert _tally(target) == _tally(db.engine) == _candidates_by_group(db.engine) == _candidates_by_group(target)
        assert _funnel_tally(target) == _funnel_tally(db.engine) and _funnel_tally(target)
        with target.connect() as conn:
            top = conn.execute(text("SELECT MAX(id) FROM candidate")).scalar()
    finally:
        target.dispose()

    # The app runs on the copy: a recruiter logs in, sees the lists, adds a candidate (a fresh
    # id past the copied ones, no duplicate key) and the API answers with the copied key.
    copy = create_app(TestConfig, database_url=target_url)
    copy.test_client_class = Client
    with copy.app_context():
        client = copy.test_client()
        assert Auth(client).login().status_code == 302
        assert client.get("/candidates").status_code == 200
        agent = db.session.scalars(select(Agent).order_by(Agent.id)).first()
        response = client.post("/candidates/new", {"agent_id": str(agent.id), "name": "After Copy",
                                                   "email": "after.copy@example.com", "phone": "", "timezone": "UTC",
                                                   "channel": "email", "deadline": "", "invite_now": "y"})
        assert response.status_code in (302, 303), response.get_data(as_text=True)
        added = db.session.scalars(select(Candidate).where(Candidate.email == "after.copy@example.com")).one()
        assert added.id == top + 1
        assert client.get(f"/candidates/{added.id}").status_code == 200
        for audit_page in ("/audit", "/metrics", "/candidates/uploads"):
            assert client.get(audit_page).status_code == 200, audit_page
        assert db.session.scalar(select(func.count()).select_from(Candidate)) == before["candidate"] + 1
        db.session.commit()
        db.session.remove()
        db.engine.dispose()


def test_copy_to_refuses_a_target_that_holds_data(source, target_url):
    make_user()
    first = source.test_cli_runner().invoke(args=["milo", "copy-to", target_url])
    assert first.exit_code == 0, first.output
    again = source.test_cli_runner().invoke(args=["milo", "copy-to", target_url])
    assert again.exit_code != 0 and "already holds data" in again.output and "user" in again.output
