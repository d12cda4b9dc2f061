"""Configuration from the environment (a ``.env`` file is read too).

Values are parsed strictly: a malformed number or boolean stops start-up with a message that
names the variable, instead of silently falling back to a default.
"""
from __future__ import annotations

import ipaddress
import os
import secrets
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import load_dotenv

ROOT = Path(__file__).resolve().parent.parent
INSTANCE_DIR = ROOT / "instance"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(RuntimeError):
    """A configuration variable has a value the app cannot use."""


def env_str(name: str, default: str | None = None) -> str | None:
    """Return the variable's value, or ``default`` when it is unset or empty."""
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def env_bool(name: str, default: bool) -> bool:
    """Parse a boolean variable (1/0, true/false, yes/no, on/off); raise on anything else."""
    value = env_str(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name} must be one of 1/0, true/false, yes/no, on/off (got {value!r})")


def env_int(name: str, default: int, minimum: int | None = None) -> int:
    """Parse an integer variable; raise naming the variable when it is not one."""
    value = env_str(name)
    if value is None:
        return default
    try:
        number = int(value.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a whole number (got {value!r})") from None
    if minimum is not None and number < minimum:
        raise ConfigError(f"{name} must be at least {minimum} (got {number})")
    return number


def normalise_database_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL URLs written the usual way."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _secret_key() -> str:
    """Return MILO_SECRET_KEY, or a random key kept in instance/ so sessions survive restarts."""
    key = env_str("MILO_SECRET_KEY")
    if key:
        return key
    INSTANCE_DIR.mkdir(parents=True, exist_ok=True)
    path = INSTANCE_DIR / "secret_key"
    if not path.exists():
        # Write a temporary file, then link it into place: the link fails if another
        # worker got there first, and nobody ever reads a half-written key.
        tmp = path.with_name(f".secret_key.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    key = path.read_text().strip()
    if not key:
        raise ConfigError(f"{path} is empty: delete it or set MILO_SECRET_KEY")
    return key


def _public_base_url() -> str:
    url = env_str("MILO_PUBLIC_BASE_URL", "http://127.0.0.1:5000").rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(
            f"MILO_PUBLIC_BASE_URL must be an origin such as https://jobs.example.com (got {url!r})"
        )
    return url


def _trusted_proxy_addresses() -> tuple:
    """Parse MILO_TRUSTED_PROXY_ADDRESSES: comma-separated addresses or networks (CIDR)."""
    value = env_str("MILO_TRUSTED_PROXY_ADDRESSES", "127.0.0.1,::1")
    networks = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(
                "MILO_TRUSTED_PROXY_ADDRESSES must list IP addresses or networks such as "
                f"10.0.0.5 or 10.0.0.0/24, separated by commas (got {item!r})"
            ) from None
    return tuple(networks)


class Config:
    """Settings read from the environment when the app is created."""

    def __init__(self) -> None:
        load_dotenv(ROOT / ".env", override=False)
        self.SECRET_KEY = _secret_key()
        self.SQLALCHEMY_DATABASE_URI = normalise_database_url(
            env_str("MILO_DATABASE_URL", f"sqlite:///{INSTANCE_DIR / 'milo.sqlite3'}")
        )
        self.MILO_PUBLIC_BASE_URL = _public_base_url()
        self.MILO_SCHEDULER = env_bool("MILO_SCHEDULER", True)
        # How often a thread of each process checkpoints a SQLite database's log (0: the
        # commits do it, SQLite's default); see rule 6 in milo_portal/transactions.py.
        self.MILO_SQLITE_CHECKPOINT_MS = env_int("MILO_SQLITE_CHECKPOINT_MS", 1000, minimum=0)
        self.MILO_TRUSTED_PROXIES = env_int("MILO_TRUSTED_PROXIES", 0, minimum=0)
        # X-Forwarded-* are believed only from these peers: anyone else reaching the app
        # directly could otherwise pick their own address and dodge the login throttle.
        self.MILO_TRUSTED_PROXY_ADDRESSES = _trusted_proxy_addresses()
        self.MAX_CONTENT_LENGTH = env_int("MILO_MAX_UPLOAD_MB", 16, minimum=1) * 1024 * 1024

        cookie_secure = env_bool("MILO_COOKIE_SECURE", False)
        self.SESSION_COOKIE_SECURE = cookie_secure
        self.REMEMBER_COOKIE_SECURE = cookie_secure
        self.SESSION_COOKIE_HTTPONLY = True
        self.REMEMBER_COOKIE_HTTPONLY = True
        self.SESSION_COOKIE_SAMESITE = "Lax"
        self.REMEMBER_COOKIE_SAMESITE = "Lax"
        self.SESSION_COOKIE_NAME = "milo_session"

        # Logins are rows in the database (user_session): a session not remembered ends
        # after this long unused; "remember me" ends this many days after logging in.
        self.MILO_SESSION_IDLE_HOURS = env_int("MILO_SESSION_IDLE_HOURS", 12, minimum=1)
        self.MILO_REMEMBER_DAYS = env_int("MILO_REMEMBER_DAYS", 30, minimum=1)
        if self.MILO_REMEMBER_DAYS > 30:
            raise ConfigError(f"MILO_REMEMBER_DAYS must be at most 30 (got {self.MILO_REMEMBER_DAYS})")
        self.REMEMBER_COOKIE_DURATION = timedelta(days=self.MILO_REMEMBER_DAYS)

        # Login throttling, counted in the database: per (address, account) pair with
        # growing delays, and a higher ceiling per address across accounts.
        if env_str("MILO_LOGIN_MAX_PER_ACCOUNT") is not None:
            raise ConfigError(
                "MILO_LOGIN_MAX_PER_ACCOUNT is no longer used: accounts are never locked as a "
                "whole. Remove it; see MILO_LOGIN_FREE_FAILURES and MILO_LOGIN_MAX_DELAY_MINUTES."
            )
        self.MILO_LOGIN_FREE_FAILURES = env_int("MILO_LOGIN_FREE_FAILURES", 3, minimum=1)
        self.MILO_LOGIN_MAX_DELAY_MINUTES = env_int("MILO_LOGIN_MAX_DELAY_MINUTES", 60, minimum=1)
        self.MILO_LOGIN_WINDOW_MINUTES = env_int("MILO_LOGIN_WINDOW_MINUTES", 15, minimum=1)
        self.MILO_LOGIN_MAX_PER_ADDRESS = env_int("MILO_LOGIN_MAX_PER_ADDRESS", 100, minimum=1)

        # Flask-Mail (used by the messaging area).
        self.MAIL_SERVER = env_str("MAIL_SERVER", "localhost")
        self.MAIL_PORT = env_int("MAIL_PORT", 25, minimum=1)
        self.MAIL_USE_TLS = env_bool("MAIL_USE_TLS", False)
        self.MAIL_USE_SSL = env_bool("MAIL_USE_SSL", False)
        self.MAIL_USERNAME = env_str("MAIL_USERNAME")
        self.MAIL_PASSWORD = env_str("MAIL_PASSWORD")
        self.MAIL_DEFAULT_SENDER = env_str("MAIL_DEFAULT_SENDER")
        self.MILO_SMTP_TIMEOUT = env_int("MILO_SMTP_TIMEOUT", 15, minimum=1)
        # One send in all (the whole SMTP conversation, or the Twilio request), whatever each read takes.
        self.MILO_SEND_DEADLINE = env_int("MILO_SEND_DEADLINE", 60, minimum=1)
        self.MILO_MESSAGE_ID_DOMAIN = env_str("MILO_MESSAGE_ID_DOMAIN")
        self.MILO_UNSUBSCRIBE_MAILTO = env_str("MILO_UNSUBSCRIBE_MAILTO")
        self.MILO_TWILIO_TIMEOUT = env_int("MILO_TWILIO_TIMEOUT", 15, minimum=1)
        for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_API_KEY", "TWILIO_API_SECRET",
                     "TWILIO_MESSAGING_SERVICE_SID", "TWILIO_FROM_NUMBER", "TWILIO_WHATSAPP_FROM",
                     "TWILIO_API_BASE_URL"):
            setattr(self, name, env_str(name))
        self.MILO_SMS_BACKEND = env_str("MILO_SMS_BACKEND", "console")
        # Lever's API, read for the applicant behind an applicationCreated event.
        self.LEVER_API_BASE_URL = env_str("LEVER_API_BASE_URL", "https://api.lever.co/v1")
        self.MILO_LEVER_TIMEOUT = env_int("MILO_LEVER_TIMEOUT", 10, minimum=1)
        if not self.LEVER_API_BASE_URL.startswith(("https://", "http://")):
            raise ConfigError(f"LEVER_API_BASE_URL must start with https:// (got {self.LEVER_API_BASE_URL!r})")
        # Follow-ups: the tick, the claim lease, retries and per-minute rates per channel.
        self.MILO_TICK_SECONDS = env_int("MILO_TICK_SECONDS", 30, minimum=1)
        self.MILO_CLAIM_LEASE_SECONDS = env_int("MILO_CLAIM_LEASE_SECONDS", 300, minimum=30)
        self.MILO_MAX_ATTEMPTS = env_int("MILO_MAX_ATTEMPTS", 8, minimum=1)
        self.MILO_RATE_EMAIL = env_int("MILO_RATE_EMAIL", 1200, minimum=1)
        self.MILO_RATE_SMS = env_int("MILO_RATE_SMS", 60, minimum=1)
        self.MILO_RATE_WHATSAPP = env_int("MILO_RATE_WHATSAPP", 60, minimum=1)
        # The JSON API: requests per minute per key (429 with Retry-After beyond).
        self.MILO_API_RATE_PER_MINUTE = env_int("MILO_API_RATE_PER_MINUTE", 120, minimum=1)
        if self.MILO_SMS_BACKEND not in ("console", "twilio"):
            raise ConfigError(
                f"MILO_SMS_BACKEND must be 'console' or 'twilio' (got {self.MILO_SMS_BACKEND!r})"
            )

        # Operations: where the nightly backups go, when /healthz calls the scheduler stale,
        # and the bearer token a Prometheus server scrapes /ops/metrics with.
        self.MILO_BACKUP_DIR = env_str("MILO_BACKUP_DIR", str(INSTANCE_DIR / "backups"))
        # Where bulk uploads wait for their review and creating: every process (web workers,
        # the scheduler, `flask milo dispatch`) must see the same folder.
        self.MILO_IMPORT_DIR = env_str("MILO_IMPORT_DIR", str(INSTANCE_DIR / "imports"))
        self.MILO_HEALTH_MAX_TICK_AGE = env_int("MILO_HEALTH_MAX_TICK_AGE", max(10 * self.MILO_TICK_SECONDS, 300),
                                                minimum=1)
        self.MILO_METRICS_TOKEN = env_str("MILO_METRICS_TOKEN")
        if self.MILO_METRICS_TOKEN is not None and len(self.MILO_METRICS_TOKEN) < 16:
            raise ConfigError("MILO_METRICS_TOKEN must be at least 16 characters (or unset)")

        self.WTF_CSRF_TIME_LIMIT = None  # the token lives as long as the session

    @property
    def SQLALCHEMY_ENGINE_OPTIONS(self) -> dict:  # noqa: N802 (Flask reads upper-case names)
        """Ping PostgreSQL connections before use (the server may have restarted); not SQLite's.

        A SQLite connection is an open file that never goes stale: its ping was one more
        statement before every page's query, twice on a page that writes.
        """
        return {} if self.SQLALCHEMY_DATABASE_URI.startswith("sqlite") else {"pool_pre_ping": True}


class TestConfig(Config):
    """Configuration for the test suite: its own database, no scheduler, fast hashing."""

    TESTING = True
    __test__ = False  # not a pytest test class

    def __init__(self, database_url: str | None = None) -> None:
        super().__init__()
        self.TESTING = True
        self.SECRET_KEY = "test-secret-key"
        self.MILO_SCHEDULER = False
        self.MILO_SQLITE_CHECKPOINT_MS = 0  # no thread per test database (one test turns it on)
        self.MILO_PUBLIC_BASE_URL = "https://jobs.example.test"
        # Tests send to real servers on loopback; Flask-Mail would otherwise drop mail in testing.
        self.MAIL_SUPPRESS_SEND = False
        self.MAIL_SERVER, self.MAIL_PORT = "127.0.0.1", 9  # nothing listens: a test picks its server
        self.MILO_SMS_BACKEND = "console"
        if database_url:
            self.SQLALCHEMY_DATABASE_URI = normalise_database_url(database_url)
