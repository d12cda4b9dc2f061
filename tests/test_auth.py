"""Logging in and out, throttling shared through the database, the Team and Account pages."""
from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event

from milo_portal import create_app
from milo_portal.auth.services import ThrottleLimits, authenticate, LoginThrottled
from milo_portal.config import Config, ConfigError, TestConfig
from milo_portal.errors import DomainError
from milo_portal.extensions import db
from milo_portal.models import LoginAttempt, User, UserSession
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
                                    "javascript:alert(1)", "http:/evil.example", "/%09/evil.example"])
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
    for _ in range(first.config["MILO_LOGIN_FREE_FAILURES"]):
        with first.app_context():
            assert Auth(c1).login(password="wrong-password!").status_code == 200
    with second.app_context():
        response = Auth(c2).login()  # even the right password waits now, from that address
        assert response.status_code == 429
        assert "Too many failed attempts" in response.get_data(as_text=True)
    for a in (first, second):
        with a.app_context():
            db.engine.dispose()


LIMITS = ThrottleLimits(free_failures=3, max_delay=timedelta(minutes=60), window=timedelta(minutes=15),
                        per_address=100)


def _fail(email: str, address: str, when):
    with pytest.raises(DomainError) as caught:
        authenticate(db.session, email, "bad password", address, when, LIMITS)
    return caught.value


def test_one_address_on_one_account_waits_longer_after_each_failure(app, user):
    t0 = at("2026-12-01T10:00:00")
    for i in range(3):  # the free failures
        assert not isinstance(_fail(user.email, "10.0.0.9", t0 + timedelta(seconds=i)), LoginThrottled)
    last = t0 + timedelta(seconds=2)
    for delay in (1, 2, 4, 8, 16, 32, 60, 60):
        refused = _fail(user.email, "10.0.0.9", last + timedelta(minutes=delay) - timedelta(seconds=1))
        assert isinstance(refused, LoginThrottled) and refused.retry_after == timedelta(seconds=1)
        last += timedelta(minutes=delay)
        assert not isinstance(_fail(user.email, "10.0.0.9", last), LoginThrottled)
    # Refusals were not recorded: only the failures that were allowed to try.
    assert db.session.query(LoginAttempt).count() == 3 + 8
    # Even the right password waits, from that address, on that account...
    with pytest.raises(LoginThrottled):
        authenticate(db.session, user.email, PASSWORD, "10.0.0.9", last + timedelta(minutes=59), LIMITS)
    # ...and gets in once the wait is over, which forgets that address's failures.
    assert authenticate(db.session, user.email, PASSWORD, "10.0.0.9", last + timedelta(minutes=60), LIMITS) == user
    assert not isinstance(_fail(user.email, "10.0.0.9", last + timedelta(minutes=61)), LoginThrottled)


def test_the_owner_from_an_address_without_failures_is_never_held_back(app, user):
    t0 = at("2026-12-01T10:00:00")
    for i in range(40):
        for address in ("203.0.113.1", "203.0.113.2", "203.0.113.3"):
            try:
                authenticate(db.session, user.email, f"guess {i}", address, t0 + timedelta(minutes=i), LIMITS)
            except DomainError:
                pass
    assert authenticate(db.session, user.email, PASSWORD, "10.20.0.5", t0 + timedelta(minutes=40), LIMITS) == user


def test_many_failures_from_one_address_slow_that_address_only(app, user):
    limits = ThrottleLimits(free_failures=3, max_delay=timedelta(minutes=60), window=timedelta(minutes=15),
                            per_address=4)
    t0 = at("2026-12-01T10:00:00")
    for i in range(4):
        with pytest.raises(DomainError):
            authenticate(db.session, f"guess{i}@example.com", "bad", "10.0.0.7", t0, limits)
    with pytest.raises(LoginThrottled) as refused:
        authenticate(db.session, user.email, PASSWORD, "10.0.0.7", t0 + timedelta(minutes=1), limits)
    assert refused.value.retry_after == timedelta(minutes=14)
    assert authenticate(db.session, user.email, PASSWORD, "10.0.0.8", t0 + timedelta(minutes=1), limits) == user
    assert authenticate(db.session, user.email, PASSWORD, "10.0.0.7", t0 + timedelta(minutes=15, seconds=1), limits)


def test_a_deactivated_user_is_logged_out_on_their_next_request(app, auth, client):
    other = make_user("olga@example.com", "Olga")
    other_client = app.test_client()
    Auth(other_client).login(email="olga@example.com")
    assert other_client.get("/agents").status_code == 200
    response = client.post(f"/team/{other.id}/active", {"active": "0"})
    assert response.status_code == 302
    assert other_client.get("/agents").headers["Location"].startswith("/login")
    response = Auth(other_client).login(email="olga@example.com")
    assert response.status_code == 200 and "Wrong e-mail or password." in response.get_data(as_text=True)


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


# --- server-side sessions -------------------------------------------------------------------

def _copy_cookie(source: Client, target: Client, name: str) -> None:
    cookie = source.get_cookie(name)
    assert cookie is not None, f"no {name} cookie"
    target.set_cookie(name, cookie.value)


def _sent_to_login(response) -> bool:
    return response.status_code == 302 and response.headers["Location"].startswith("/login")


def _clock(monkeypatch, instant):
    """Make the login views see ``instant`` as now."""
    monkeypatch.setattr("milo_portal.auth.views.now", lambda: instant)


def test_a_session_cookie_copied_before_logout_no_longer_works(app, client, user):
    """Defect: logout only cleared the browser's cookie; a copy kept the session alive."""
    Auth(client).login()
    thief = app.test_client()
    _copy_cookie(client, thief, "milo_session")
    assert thief.get("/agents").status_code == 200
    Auth(client).logout()
    assert _sent_to_login(thief.get("/agents"))


def test_a_remember_cookie_copied_before_logout_no_longer_works(app, client, user):
    """Defect: the remember cookie carried a per-user token that logout never changed."""
    client.post("/login", {"email": user.email, "password": PASSWORD, "remember": "y"})
    thief = app.test_client()
    _copy_cookie(client, thief, "remember_token")
    assert thief.get("/agents").status_code == 200
    Auth(client).logout()
    other = app.test_client()
    _copy_cookie(thief, other, "remember_token")
    assert _sent_to_login(other.get("/agents"))


def test_remember_me_lasts_thirty_days_not_a_year(app, client, user, monkeypatch):
    """Defect: the remember cookie lasted a year (Flask-Login's default)."""
    t0 = at("2026-12-01T09:00:00")
    _clock(monkeypatch, t0)
    client.post("/login", {"email": user.email, "password": PASSWORD, "remember": "y"})
    cookie = client.get_cookie("remember_token")
    assert cookie.expires is not None
    assert cookie.expires - datetime.now(timezone.utc) <= timedelta(days=30, minutes=1)
    for days, works in ((29, True), (30, False)):
        _clock(monkeypatch, t0 + timedelta(days=days, seconds=1))
        browser = app.test_client()
        _copy_cookie(client, browser, "remember_token")
        response = browser.get("/agents")
        assert (response.status_code == 200) is works, days


# --- throttling ----------------------------------------------------------------------------

def _login_from(client: Client, address: str, email: str, password: str):
    return client.post("/login", {"email": email, "password": password},
                       environ_base={"REMOTE_ADDR": address})


def test_an_attacker_cannot_lock_the_owner_out(app, client, user, monkeypatch):
    """Defect: 5 wrong passwords every 15 minutes from anywhere kept the owner locked out."""
    t0 = at("2026-12-01T09:00:00")
    for i in range(12):
        _clock(monkeypatch, t0 + timedelta(minutes=i))
        _login_from(client, "203.0.113.66", user.email, f"guess-number-{i}")
    _clock(monkeypatch, t0 + timedelta(minutes=12))
    owner = app.test_client()
    response = _login_from(owner, "10.20.0.5", user.email, PASSWORD)
    assert response.status_code == 302 and response.headers["Location"] == "/agents"
    # ...while the attacker's address is still held back, even with the right password.
    assert _login_from(app.test_client(), "203.0.113.66", user.email, PASSWORD).status_code == 429


def test_failures_behind_an_office_nat_do_not_lock_colleagues_out(app, client, user, monkeypatch):
    """Defect: 20 failures from one address locked every account behind it."""
    _clock(monkeypatch, at("2026-12-01T09:00:00"))
    for i in range(20):
        _login_from(client, "192.0.2.10", f"someone{i}@example.com", "not-the-password")
    colleague = app.test_client()
    response = _login_from(colleague, "192.0.2.10", user.email, PASSWORD)
    assert response.status_code == 302


def test_a_deactivated_account_answers_like_a_wrong_password(app, client, user):
    """Defect: the right password for a deactivated account was told "deactivated"."""
    make_user("olga@example.com", "Olga", active=False)
    wrong = _login_from(app.test_client(), "10.0.0.1", "olga@example.com", "not-her-password")
    unknown = _login_from(app.test_client(), "10.0.0.2", "nobody@example.com", PASSWORD)
    deactivated = _login_from(app.test_client(), "10.0.0.3", "olga@example.com", PASSWORD)

    def text(response):
        # Everything but the CSRF tokens and the e-mail typed back into the form.
        return re.sub(r'value="[^"]*"|"X-CSRFToken": "[^"]*"', "", response.get_data(as_text=True))

    assert wrong.status_code == unknown.status_code == deactivated.status_code == 200
    assert text(deactivated) == text(wrong) == text(unknown)
    assert "deactivated" not in text(deactivated).lower()


def test_revoking_a_session_on_the_team_page_ends_it(app, auth, client):
    """Defect: there was no way to end one session of a teammate (a lost laptop)."""
    make_user("olga@example.com", "Olga")
    laptop = app.test_client()
    Auth(laptop).login(email="olga@example.com")
    phone = app.test_client()
    Auth(phone).login(email="olga@example.com")
    laptop_session = db.session.query(UserSession).order_by(UserSession.id.desc()).offset(1).first()
    body = client.get("/team").get_data(as_text=True)
    assert f"/team/sessions/{laptop_session.id}/revoke" in body and "(this device)" in body
    response = client.post(f"/team/sessions/{laptop_session.id}/revoke")
    assert response.status_code == 302 and response.headers["Location"] == "/team"
    assert _sent_to_login(laptop.get("/agents"))
    assert phone.get("/agents").status_code == 200
    assert client.get("/agents").status_code == 200
    assert client.post("/team/sessions/999/revoke").status_code == 404


def test_log_out_everywhere_ends_every_session_of_that_teammate(app, auth, client):
    olga = make_user("olga@example.com", "Olga")
    browsers = [app.test_client() for _ in range(2)]
    for browser in browsers:
        browser.post("/login", {"email": olga.email, "password": PASSWORD, "remember": "y"})
    response = client.post(f"/team/{olga.id}/sessions/revoke")
    assert "logged out everywhere (2 sessions)" in client.get(response.headers["Location"]).get_data(as_text=True)
    for browser in browsers:
        assert _sent_to_login(browser.get("/agents"))
    assert client.get("/agents").status_code == 200


def test_log_out_everywhere_on_oneself_ends_this_session_too(app, auth, client, user):
    other_device = app.test_client()
    Auth(other_device).login()
    response = client.post(f"/team/{user.id}/sessions/revoke")
    assert response.headers["Location"] == "/login"
    assert _sent_to_login(client.get("/agents")) and _sent_to_login(other_device.get("/agents"))


def test_changing_the_password_ends_other_sessions_but_not_this_one(app, client, user):
    client.post("/login", {"email": user.email, "password": PASSWORD, "remember": "y"})
    elsewhere = app.test_client()
    Auth(elsewhere).login()
    response = client.post("/account", {"pw-current": PASSWORD, "pw-password": "another-good-pass",
                                        "pw-confirm": "another-good-pass"})
    assert response.status_code == 302
    assert _sent_to_login(elsewhere.get("/agents"))
    assert client.get("/agents").status_code == 200
    # This device's remember cookie is the same session: it still opens the app.
    restored = app.test_client()
    _copy_cookie(client, restored, "remember_token")
    assert restored.get("/agents").status_code == 200


def test_sessions_keep_only_a_hash_of_their_token(client, user):
    Auth(client).login()
    row = db.session.query(UserSession).one()
    token = client.get_cookie("milo_session").value
    assert len(row.token_hash) == 64 and row.token_hash not in token
    assert (row.user_id, row.remember, row.revoked_at) == (user.id, False, None)


def test_a_session_not_remembered_ends_after_its_idle_time(app, client, user, monkeypatch):
    t0 = at("2026-12-01T09:00:00")
    _clock(monkeypatch, t0)
    Auth(client).login()
    idle = timedelta(hours=app.config["MILO_SESSION_IDLE_HOURS"])
    _clock(monkeypatch, t0 + idle - timedelta(minutes=1))
    assert client.get("/agents").status_code == 200  # in use: the end moves on
    _clock(monkeypatch, t0 + 2 * idle - timedelta(minutes=2))
    assert client.get("/agents").status_code == 200
    _clock(monkeypatch, t0 + 3 * idle)
    assert _sent_to_login(client.get("/agents"))


def test_the_last_seen_time_is_written_in_a_write_unit_of_its_own(app, client, user, monkeypatch):
    """Defect: a GET wrote the session's last-seen time with an UPDATE in a deferred SQLite
    transaction, which fails at once ("database is locked") when another writer committed
    first: 2-7 of the candidates list's requests failed with 500 under load."""
    if db.engine.dialect.name != "sqlite":
        pytest.skip("the BEGIN mode is SQLite's")
    t0 = at("2026-12-01T09:00:00")
    _clock(monkeypatch, t0)
    Auth(client).login()
    seen = []

    def record(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith(("BEGIN", "UPDATE")):
            seen.append(statement.split()[0:2])

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        _clock(monkeypatch, t0 + timedelta(minutes=6))
        assert client.get("/agents").status_code == 200
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    update = next(i for i, s in enumerate(seen) if s[0].upper() == "UPDATE")
    assert seen[update - 1] == ["BEGIN", "IMMEDIATE"], seen


def test_a_get_writes_the_last_seen_time_at_most_every_five_minutes(app, client, user, monkeypatch):
    t0 = at("2026-12-01T09:00:00")
    _clock(monkeypatch, t0)
    Auth(client).login()
    writes = []

    def count_updates(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith(("UPDATE", "INSERT", "DELETE")):
            writes.append(statement)

    event.listen(db.engine, "before_cursor_execute", count_updates)
    try:
        for seconds in (10, 60, 299):
            _clock(monkeypatch, t0 + timedelta(seconds=seconds))
            assert client.get("/agents").status_code == 200
        assert writes == []
        _clock(monkeypatch, t0 + timedelta(minutes=5))
        assert client.get("/agents").status_code == 200
        assert len(writes) == 1 and "user_session" in writes[0]
    finally:
        event.remove(db.engine, "before_cursor_execute", count_updates)
    db.session.expire_all()
    assert db.session.query(UserSession).one().last_seen_at == t0 + timedelta(minutes=5)


def test_the_remember_cookie_is_httponly_lax_and_secure_when_configured(app, client, user, monkeypatch):
    client.post("/login", {"email": user.email, "password": PASSWORD, "remember": "y"})
    cookie = client.get_cookie("remember_token")
    assert cookie.http_only and cookie.same_site == "Lax" and not cookie.secure
    monkeypatch.setenv("MILO_COOKIE_SECURE", "true")
    config = Config()
    app.config.update(SESSION_COOKIE_SECURE=config.SESSION_COOKIE_SECURE,
                      REMEMBER_COOKIE_SECURE=config.REMEMBER_COOKIE_SECURE)
    secure = app.test_client()
    response = secure.post("/login", {"email": user.email, "password": PASSWORD, "remember": "y"},
                           base_url="https://localhost", headers={"Referer": "https://localhost/login"})
    assert response.status_code == 302
    cookies = {c.split("=", 1)[0]: c for c in response.headers.getlist("Set-Cookie")}
    assert "Secure" in cookies["remember_token"] and "Secure" in cookies["milo_session"]


@pytest.mark.parametrize("name, value", [("MILO_REMEMBER_DAYS", "365"), ("MILO_LOGIN_MAX_PER_ACCOUNT", "5")])
def test_config_refuses_a_year_long_remember_me_and_the_old_account_lock(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        Config()


def test_guesses_sent_at_once_from_one_address_are_counted_one_by_one(app, user):
    """Parallel guesses must not all pass the check before any of them is recorded."""
    email, when = user.email, at("2026-12-01T10:00:00")
    db.session.commit()  # the test holds no transaction (on SQLite, no write lock) meanwhile
    start = threading.Barrier(8)

    def guess(i: int) -> str:
        with app.app_context():
            start.wait()
            try:
                authenticate(db.session, email, f"guess {i}", "203.0.113.5", when, LIMITS)
            except DomainError as err:
                return type(err).__name__
            finally:
                db.session.remove()
        return "logged in"

    with ThreadPoolExecutor(8) as pool:
        outcomes = sorted(pool.map(guess, range(8)))
    assert outcomes == ["DomainError"] * 3 + ["LoginThrottled"] * 5
    assert db.session.query(LoginAttempt).count() == 3


def test_recording_activity_never_commits_the_request_s_own_work(app, user):
    from milo_portal.auth import sessions

    policy = sessions.SessionPolicy(idle=timedelta(hours=12), remember=timedelta(days=30))
    t0 = at("2026-12-01T09:00:00")
    token = sessions.start_session(db.session, user, t0, policy, remember=False, address="10.0.0.1",
                                   user_agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0")
    row = sessions.find_session(db.session, token, t0 + timedelta(minutes=10))
    assert row.device == "Firefox on Linux"
    user.name = "Half-edited"  # a request's change, not committed yet
    assert sessions.touch(db.session, row, t0 + timedelta(minutes=10), policy, "10.0.0.1") is False
    db.session.rollback()
    assert db.session.get(User, user.id).name == "Rita Recruiter"
    assert sessions.touch(db.session, row, t0 + timedelta(minutes=10), policy, "10.0.0.2") is True
    # The idle time now counts from the touch: still open just after 12 hours from login.
    assert sessions.find_session(db.session, token, t0 + timedelta(hours=12, minutes=5)).address == "10.0.0.2"
