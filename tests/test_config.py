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
