"""The set-up checklist: what a new installation still needs before a message can go out.

"Configured" means a test send would work: a sender address, a mail server that answers
(a real connect and EHLO), links candidates can open (not 127.0.0.1), and Twilio when a
channel needs it. The mail server probe is a network call: it runs with no transaction open
and its answer is kept a few minutes per process, so pages that show the checklist stay fast.
"""
from __future__ import annotations

import smtplib
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import func, select, union_all
from sqlalchemy.orm import Session

from ..models import Agent, Message, MessageStatus, Settings

PROBE_TTL = 300.0  # seconds a probe's answer is kept
PROBE_TIMEOUT = 5.0
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}

_probes: dict[tuple, tuple[float, str | None]] = {}
_probes_lock = threading.Lock()


@dataclass(frozen=True)
class Check:
    """One line of the checklist: done or not, what was found, and how to fix it."""

    key: str
    label: str
    ok: bool
    detail: str
    fix: str = ""


def probe_smtp(config: dict) -> str | None:
    """Connect to the configured mail server and say EHLO (and log in if configured).

    Returns None when it answered properly, else the error a person can act on.
    """
    server, port = config.get("MAIL_SERVER"), config.get("MAIL_PORT")
    timeout = min(float(config.get("MILO_SMTP_TIMEOUT") or PROBE_TIMEOUT), PROBE_TIMEOUT)
    try:
        cls = smtplib.SMTP_SSL if config.get("MAIL_USE_SSL") else smtplib.SMTP
        with cls(server, port, timeout=timeout) as smtp:
            code, _ = smtp.ehlo()
            if not 200 <= code < 300:
                return f"{server}:{port} answered EHLO with {code}"
            if config.get("MAIL_USE_TLS"):
                smtp.starttls()
                smtp.ehlo()
            if config.get("MAIL_USERNAME") and config.get("MAIL_PASSWORD"):
                smtp.login(config["MAIL_USERNAME"], config["MAIL_PASSWORD"])
    except smtplib.SMTPAuthenticationError as err:
        return f"{server}:{port} refused the login ({err.smtp_code}): check MAIL_USERNAME and MAIL_PASSWORD"
    except (socket.timeout, TimeoutError):
        return f"{server}:{port} did not answer within {timeout:.0f} s"
    except smtplib.SMTPServerDisconnected as err:
        if "timed out" in str(err):  # smtplib's word for a greeting that never came
            return f"{server}:{port} did not answer within {timeout:.0f} s"
        return f"{server}:{port} closed the connection: {err}"
    except ConnectionRefusedError:
        return f"{server}:{port} refused the connection: is the mail server running, on that port?"
    except (smtplib.SMTPException, OSError) as err:
        return f"{server}:{port}: {err}"
    return None


def smtp_problem(config: dict, refresh: bool = False) -> str | None:
    """The mail server probe's answer, kept PROBE_TTL seconds per process and settings."""
    key = tuple(config.get(k) for k in ("MAIL_SERVER", "MAIL_PORT", "MAIL_USE_SSL", "MAIL_USE_TLS", "MAIL_USERNAME"))
    with _probes_lock:
        cached = _probes.get(key)
    if cached is not None and not refresh and time.monotonic() - cached[0] < PROBE_TTL:
        return cached[1]
    problem = probe_smtp(config)
    with _probes_lock:
        _probes[key] = (time.monotonic(), problem)
    return problem


def sender_address(settings: Settings, config: dict) -> str | None:
    """The address our e-mails come from, if one is set."""
    return settings.sender_email or config.get("MAIL_DEFAULT_SENDER")


def text_channels_in_use(session: Session) -> bool:
    """Whether any active interview sends by SMS or WhatsApp by default."""
    return session.scalar(select(Agent.id).where(Agent.archived_at.is_(None),
                                                 Agent.default_channel.in_(("sms", "whatsapp"))).limit(1)) is not None


def checklist(settings: Settings, config: dict, smtp: str | None, texts_needed: bool,
              twilio_ready: bool) -> list[Check]:
    """Every check, from what was found (``smtp``: the probe's problem or None)."""
    sender = sender_address(settings, config)
    host = urlsplit(config["MILO_PUBLIC_BASE_URL"]).hostname or ""
    checks = [
        Check("sender", "Sender address", bool(sender),
              f"E-mails come from {sender}." if sender else "E-mails have no sender address, so none can go out.",
              "" if sender else "Set the sender address under Settings → Messaging."),
        Check("smtp", "Mail server", smtp is None,
              f"{config.get('MAIL_SERVER')}:{config.get('MAIL_PORT')} answers." if smtp is None else smtp,
              "" if smtp is None else "Set MAIL_SERVER, MAIL_PORT (and MAIL_USE_TLS, MAIL_USERNAME, "
                                      "MAIL_PASSWORD) for your mail server, then restart the app."),
        Check("public_url", "Links candidates can open", host not in LOCAL_HOSTS,
              f"Links start with {config['MILO_PUBLIC_BASE_URL']}." if host not in LOCAL_HOSTS else
              f"Links start with {config['MILO_PUBLIC_BASE_URL']}, which only this computer can open.",
              "" if host not in LOCAL_HOSTS else "Set MILO_PUBLIC_BASE_URL to the address candidates reach, "
                                                 "e.g. https://jobs.example.com, then restart the app."),
    ]
    if texts_needed or config.get("MILO_SMS_BACKEND") == "twilio":
        console = config.get("MILO_SMS_BACKEND") != "twilio"
        ok = not console and twilio_ready
        checks.append(Check(
            "twilio", "SMS and WhatsApp", ok,
            "Twilio sends SMS and WhatsApp." if ok else (
                "An interview sends by SMS or WhatsApp, but messages are only written to the log." if console
                else "Twilio is chosen but not fully configured."),
            "" if ok else "Set MILO_SMS_BACKEND=twilio, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and "
                          "TWILIO_FROM_NUMBER (or TWILIO_MESSAGING_SERVICE_SID), then restart the app."))
    return checks


@dataclass(frozen=True)
class Failing:
    """Messages in trouble: failed for good lately, or retrying after an error."""

    failed: int
    retrying: int
    last_error: str | None

    @property
    def any(self) -> bool:
        return bool(self.failed or self.retrying)


def failing(session: Session, now: datetime, agent_id: int | None = None) -> Failing:
    """Messages that failed in the last day or are being retried, with the newest error of those.

    Each part is read through ``ix_message_status_scheduled_for`` (a day of failures, the
    queue), never by walking every message from the newest down: with an agent, that walk
    checked the agent of each message until one matched (80 ms at a million candidates).
    """
    from ..models import Candidate

    since = now - timedelta(days=1)
    parts = ((Message.status == MessageStatus.FAILED, Message.scheduled_for > since),
             (Message.status == MessageStatus.SCHEDULED, Message.last_error.is_not(None)))

    def of_agent(query):
        if agent_id is None:
            return query
        return query.join(Candidate, Candidate.id == Message.candidate_id).where(Candidate.agent_id == agent_id)

    failed, retrying = (session.scalar(of_agent(select(func.count()).select_from(Message).where(*conds))) or 0
                        for conds in parts)
    last = None
    if failed or retrying:
        errors = (of_agent(select(Message.id, Message.last_error).where(*conds, Message.last_error.is_not(None)))
                  for conds in parts)
        newest = union_all(*errors).subquery()
        last = session.scalar(select(newest.c.last_error).order_by(newest.c.id.desc()).limit(1))
    return Failing(failed, retrying, last)
