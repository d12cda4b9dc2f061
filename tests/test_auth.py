"""Logging in and out, throttling shared through the database, the Team and Account pages."""
from __future__ import annotations

from datetime import timedelta

import pytest

from milo_portal import create_app
from milo_portal.auth.services import ThrottleLimits, authenticate, LoginThrottled
from milo_portal.config import TestConfig
from milo_portal.errors import DomainError
from milo_portal.extensions import db
from milo_portal.models import LoginAttempt, User
from tests.conftest import PASSWORD, Auth, Client, at, make_user


def test_it_logs_in_and_out(client, user):
    auth = Auth(client)
    response = auth.login()
    assert response.status_code == 302 and response.headers["Location"] == "/agents"
    assert client.get("/agents").status_code == 200
    auth.logout()
    assert client.get("/agents").headers["Location"].startswith("/login")


def test_it_says_wrong_password_without_telling_which_part(client, user):
    response = Auth(client).login(password="nope-nope-nope")
    assert response.status_code == 200
    assert "Wrong e-mail or password." in response.get_data(as_text=True)
    response = Auth(client).login(email="nobody@example.com")
    assert "Wrong e-mail or password." in response.get_data(as_text=True)


def test_login_page_explains_how_to_create_the_first_login(client):
    body = client.get("/login").get_data(as_text=True)
    assert "milo create-admin" in body


@pytest.mark.parametrize("target", ["//evil.example", "https://evil.example", "/\\evil.example",
                                    "javascript:alert(1)", "http:/evil.example"])
def test_next_never_leaves_the_site(client, user, target):
    response = Auth(client).login(next=target)
    assert response.status_code == 302
    assert response.headers["Location"] == "/agents"


def test_next_to_our_own_path_is_followed(client, user):
    response = Auth(client).login(next="/team")
    assert response.headers["Location"] == "/team"


def test_throttling_is_shared_by_two_app_instances(database_url, app, user):
    """Two processes (two apps on one database) see the same failure count."""
    first = create_app(TestConfig, database_url=database_url)
    second = create_app(TestConfig, database_url=database_url)
    first.test_client_class = second.test_client_class = Client
    c1, c2 = first.test_client(), second.test_client()
    for _ in range(first.config["MILO_LOGIN_MAX_PER_ACCOUNT"]):
        with first.app_context():
            assert Auth(c1).login(password="wrong-password!").status_code == 200
    with second.app_context():
        response = Auth(c2).login()  # even the right password waits now
        assert response.status_code == 429
        assert "Too many failed attempts" in response.get_data(as_text=True)
    for a in (first, second):
        with a.app_context():
            db.engine.dispose()


def test_throttle_ends_after_the_window_and_refusals_do_not_extend_it(app, user):
    limits = ThrottleLimits(window=timedelta(minutes=15), per_account=3, per_address=100)
    t0 = at("2026-12-01T10:00:00")
    for i in range(3):
        with pytest.raises(DomainError):
            authenticate(db.session, user.email, "bad", "10.0.0.1", t0 + timedelta(minutes=i), limits)
    # An attacker keeps trying: refused, and the refusals are not counted.
    for i in range(10):
        with pytest.raises(LoginThrottled):
            authenticate(db.session, user.email, "bad", "10.0.0.9", t0 + timedelta(minutes=5 + i), limits)
    assert db.session.query(LoginAttempt).count() == 3
    # Fifteen minutes after the first failure the owner gets in.
    ok = authenticate(db.session, user.email, PASSWORD, "10.0.0.2", t0 + timedelta(minutes=15, seconds=1), limits)
    assert ok.id == user.id


def test_throttle_per_address_covers_many_accounts(app, user):
    limits = ThrottleLimits(window=timedelta(minutes=15), per_account=100, per_address=4)
    t0 = at("2026-12-01T10:00:00")
    for i in range(4):
        with pytest.raises(DomainError):
            authenticate(db.session, f"guess{i}@example.com", "bad", "10.0.0.7", t0, limits)
    with pytest.raises(LoginThrottled):
        authenticate(db.session, user.email, PASSWORD, "10.0.0.7", t0 + timedelta(minutes=1), limits)
    assert authenticate(db.session, user.email, PASSWORD, "10.0.0.8", t0 + timedelta(minutes=1), limits)


def test_a_deactivated_user_is_logged_out_on_their_next_request(app, auth, client):
    other = make_user("olga@example.com", "Olga")
    other_client = app.test_client()
    Auth(other_client).login(email="olga@example.com")
    assert other_client.get("/agents").status_code == 200
    response = client.post(f"/team/{other.id}/active", {"active": "0"})
    assert response.status_code == 302
    assert other_client.get("/agents").headers["Location"].startswith("/login")
    response = Auth(other_client).login(email="olga@example.com")
    assert "deactivated" in response.get_data(as_text=True)


def test_you_cannot_deactivate_yourself(auth, client, user):
    client.post(f"/team/{user.id}/active", {"active": "0"})
    db.session.refresh(user)
    assert user.active is True


def test_team_page_adds_a_teammate_who_can_log_in(app, auth, client):
    response = client.post("/team", {"name": "Tom", "email": "Tom@Example.com", "password": "long-enough-pw"})
    assert response.status_code == 302
    fresh = app.test_client()
    assert Auth(fresh).login(email="tom@example.com", password="long-enough-pw").status_code == 302


def test_team_page_refuses_a_duplicate_and_a_short_password(auth, client, user):
    body = client.post("/team", {"name": "X", "email": user.email, "password": "long-enough-pw"}).get_data(as_text=True)
    assert "already uses this e-mail" in body
    body = client.post("/team", {"name": "X", "email": "x@example.com", "password": "short"}).get_data(as_text=True)
    assert "at least 10 characters" in body
    assert db.session.query(User).count() == 1


def test_reset_password_ends_the_teammates_sessions(app, auth, client):
    other = make_user("olga@example.com", "Olga")
    other_client = app.test_client()
    Auth(other_client).login(email="olga@example.com")
    client.post(f"/team/{other.id}/password", {"password": "brand-new-password"})
    assert other_client.get("/agents").status_code == 302
    assert Auth(app.test_client()).login(email="olga@example.com", password="brand-new-password").status_code == 302


def test_changing_own_password_keeps_this_session(auth, client):
    response = client.post("/account", {"pw-current": PASSWORD, "pw-password": "another-good-pass",
                                        "pw-confirm": "another-good-pass"})
    assert response.status_code == 302
    assert client.get("/agents").status_code == 200


def test_changing_own_password_needs_the_current_one(auth, client):
    body = client.post("/account", {"pw-current": "wrong", "pw-password": "another-good-pass",
                                    "pw-confirm": "another-good-pass"}).get_data(as_text=True)
    assert "not your current password" in body


def test_profile_sets_the_name_that_signs_messages(auth, client, user):
    client.post("/account", {"profile-name": "Rita R.", "profile-timezone": "Europe/Berlin"})
    db.session.refresh(user)
    assert (user.name, user.timezone) == ("Rita R.", "Europe/Berlin")


def test_passwords_are_hashed_with_scrypt(user):
    assert user.password_hash.startswith("scrypt:")


def test_create_admin_reads_the_password_from_stdin(runner, app):
    result = runner.invoke(args=["milo", "create-admin", "boss@example.com", "--password-stdin"],
                           input="a-very-good-password\n")
    assert result.exit_code == 0, result.output
    assert db.session.query(User).filter_by(email="boss@example.com").one().check_password("a-very-good-password")


def test_create_admin_refuses_a_short_password(runner, app):
    result = runner.invoke(args=["milo", "create-admin", "boss@example.com", "--password-stdin"], input="short\n")
    assert result.exit_code != 0 and "at least 10 characters" in result.output
