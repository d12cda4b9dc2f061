"""Configuration is strict: bad values stop start-up naming the variable."""
from __future__ import annotations

import pytest

from milo_portal.config import Config, ConfigError, env_bool, env_int, normalise_database_url


def test_it_parses_booleans_strictly(monkeypatch):
    monkeypatch.setenv("MILO_X", "yes")
    assert env_bool("MILO_X", False) is True
    monkeypatch.setenv("MILO_X", "maybe")
    with pytest.raises(ConfigError, match="MILO_X"):
        env_bool("MILO_X", False)


def test_it_parses_integers_strictly(monkeypatch):
    monkeypatch.setenv("MILO_N", "12")
    assert env_int("MILO_N", 1) == 12
    monkeypatch.setenv("MILO_N", "12a")
    with pytest.raises(ConfigError, match="MILO_N"):
        env_int("MILO_N", 1)


def test_it_refuses_a_bad_public_base_url(monkeypatch):
    monkeypatch.setenv("MILO_PUBLIC_BASE_URL", "jobs.example.com")
    with pytest.raises(ConfigError, match="MILO_PUBLIC_BASE_URL"):
        Config()


def test_it_refuses_a_bad_scheduler_flag(monkeypatch):
    monkeypatch.setenv("MILO_SCHEDULER", "sometimes")
    with pytest.raises(ConfigError, match="MILO_SCHEDULER"):
        Config()


def test_it_uses_psycopg3_for_postgres_urls():
    assert normalise_database_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_database_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_database_url("sqlite:///x.db") == "sqlite:///x.db"


def test_the_send_deadline_is_parsed_strictly(monkeypatch):
    monkeypatch.setenv("MILO_SEND_DEADLINE", "45")
    assert Config().MILO_SEND_DEADLINE == 45
    for bad in ("soon", "0"):
        monkeypatch.setenv("MILO_SEND_DEADLINE", bad)
        with pytest.raises(ConfigError, match="MILO_SEND_DEADLINE"):
            Config()


def test_only_postgresql_connections_are_pinged_before_use(monkeypatch):
    """A SQLite file never drops a connection: its ping was one more statement per page."""
    from milo_portal import create_app
    from milo_portal.config import TestConfig
    from milo_portal.extensions import db

    monkeypatch.setenv("MILO_DATABASE_URL", "sqlite:////tmp/milo-config-test.sqlite3")
    assert Config().SQLALCHEMY_ENGINE_OPTIONS == {}
    monkeypatch.setenv("MILO_DATABASE_URL", "postgresql://milo@db.example.test/milo")
    assert Config().SQLALCHEMY_ENGINE_OPTIONS == {"pool_pre_ping": True}
    app = create_app(TestConfig, database_url="sqlite:////tmp/milo-config-test.sqlite3")
    with app.app_context():
        assert db.engine.pool._pre_ping is False


def test_lever_api_base_url_and_timeout(monkeypatch):
    cfg = Config()
    assert (cfg.LEVER_API_BASE_URL, cfg.MILO_LEVER_TIMEOUT) == ("https://api.lever.co/v1", 10)
    monkeypatch.setenv("LEVER_API_BASE_URL", "api.lever.co/v1")
    with pytest.raises(ConfigError, match="LEVER_API_BASE_URL"):
        Config()
    monkeypatch.setenv("LEVER_API_BASE_URL", "http://127.0.0.1:8089/v1")
    monkeypatch.setenv("MILO_LEVER_TIMEOUT", "0")
    with pytest.raises(ConfigError, match="MILO_LEVER_TIMEOUT"):
        Config()
