"""The channels that carry messages: e-mail over SMTP (Flask-Mail) and SMS/WhatsApp over
Twilio's Messages API (or the console, for development).

Every send returns a :class:`SendResult` that says whether the message surely went, surely
failed for good, or failed in a way worth retrying; the dispatcher decides what follows.
"""
from __future__ import annotations

import logging
import smtplib
import socket
import uuid
from dataclasses import dataclass
from email.utils import make_msgid

from flask import current_app
from flask_mail import Connection
from flask_mail import Message as MailMessage

log = logging.getLogger(__name__)

SENT = "sent"
TEMPORARY = "temporary"
PERMANENT = "permanent"


@dataclass(frozen=True)
class SendResult:
    """Outcome of one send: ``status`` is sent, temporary or permanent."""

    status: str
    provider_id: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == SENT


@dataclass(frozen=True)
class Email:
    """A rendered e-mail ready for SMTP."""

    to: str
    subject: str
    text: str
    html: str
    sender: tuple[str, str] | str
    reply_to: str | None
    message_id_domain: str
    list_unsubscribe: str | None = None


# --- e-mail -------------------------------------------------------------------------------

class TimeoutConnection(Connection):
    """Flask-Mail's SMTP connection with a connect/read timeout (it has none of its own)."""

    def __init__(self, mail, timeout: float) -> None:
        super().__init__(mail)
        self.timeout = timeout

    def configure_host(self):
        if self.mail.use_ssl:
            host = smtplib.SMTP_SSL(self.mail.server, self.mail.port, timeout=self.timeout)
        else:
            host = smtplib.SMTP(self.mail.server, self.mail.port, timeout=self.timeout)
        host.set_debuglevel(int(self.mail.debug))
        if self.mail.use_tls:
            host.starttls()
        if self.mail.username and self.mail.password:
            host.login(self.mail.username, self.mail.password)
        return host

    def __exit__(self, exc_type, exc_value, tb) -> None:
        # Closing a connection the server already dropped must not hide the real outcome.
        if self.host is not None:
            try:
                self.host.quit()
            except (smtplib.SMTPException, OSError):
                self.host.close()
            self.host = None


def smtp_connection() -> TimeoutConnection:
    """A new SMTP connection (use as a context manager; reuse it for a batch)."""
    return TimeoutConnection(current_app.extensions["mail"], current_app.config["MILO_SMTP_TIMEOUT"])


def build_email(email: Email) -> MailMessage:
    """The MIME message: text + HTML, our own Message-ID, one-click List-Unsubscribe."""
    headers = {}
    if email.list_unsubscribe:
        headers["List-Unsubscribe"] = email.list_unsubscribe
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg = MailMessage(subject=email.subject, recipients=[email.to], body=email.text, html=email.html,
                      sender=email.sender, reply_to=email.reply_to, extra_headers=headers)
    msg.msgId = make_msgid(domain=email.message_id_domain)
    return msg


def classify_smtp_error(err: BaseException) -> SendResult:
    """Temporary (retry later) or permanent (give up), with a reason a recruiter can read."""
    if isinstance(err, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in err.recipients.values()]
        detail = "; ".join(f"{code} {msg.decode(errors='replace') if isinstance(msg, bytes) else msg}"
                           for code, msg in err.recipients.values())
        if all(400 <= c < 500 for c in codes):
            return SendResult(TEMPORARY, error=f"Recipient deferred: {detail}")
        return SendResult(PERMANENT, error=f"Recipient refused: {detail}")
    if isinstance(err, smtplib.SMTPAuthenticationError):
        # The account, not the message, is wrong: retry once the settings are fixed.
        return SendResult(TEMPORARY, error=f"SMTP login refused ({err.smtp_code}): check MAIL_USERNAME/MAIL_PASSWORD")
    if isinstance(err, smtplib.SMTPResponseException):
        text = err.smtp_error.decode(errors="replace") if isinstance(err.smtp_error, bytes) else str(err.smtp_error)
        if 500 <= err.smtp_code < 600:
            return SendResult(PERMANENT, error=f"SMTP {err.smtp_code}: {text}")
        return SendResult(TEMPORARY, error=f"SMTP {err.smtp_code}: {text}")
    if isinstance(err, (socket.timeout, TimeoutError)) or (
            isinstance(err, smtplib.SMTPServerDisconnected) and "timed out" in str(err)):
        return SendResult(TEMPORARY, error="The mail server did not answer in time")
    if isinstance(err, ConnectionRefusedError):
        return SendResult(TEMPORARY, error="The mail server refused the connection")
    if isinstance(err, (smtplib.SMTPException, OSError)):
        return SendResult(TEMPORARY, error=f"Mail server problem: {err}")
    raise err


def send_email(email: Email, connection: TimeoutConnection | None = None) -> SendResult:
    """Send one e-mail, over ``connection`` if given (batches reuse one), else a new one."""
    message = build_email(email)
    try:
        if connection is not None:
            if connection.host is None:
                connection.host = connection.configure_host()
            connection.send(message)
        else:
            with smtp_connection() as conn:
                conn.send(message)
    except Exception as err:  # classified: anything unexpected is re-raised there
        if connection is not None:
            # The connection may be unusable now: the next send opens a new one.
            connection.__exit__(None, None, None)
        return classify_smtp_error(err)
    return SendResult(SENT, provider_id=message.msgId.strip("<>"))


# --- SMS and WhatsApp ---------------------------------------------------------------------

def _twilio_client():
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    cfg = current_app.config
    base = cfg.get("TWILIO_API_BASE_URL")

    class HttpClient(TwilioHttpClient):
        """Twilio's HTTP client with a timeout, optionally pointed at another base URL."""

        def request(self, method, url, *args, **kwargs):
            if base:
                url = url.replace("https://api.twilio.com", base.rstrip("/"), 1)
            return super().request(method, url, *args, **kwargs)

    http = HttpClient(timeout=cfg["MILO_TWILIO_TIMEOUT"])
    if cfg.get("TWILIO_API_KEY") and cfg.get("TWILIO_API_SECRET"):
        return Client(cfg["TWILIO_API_KEY"], cfg["TWILIO_API_SECRET"], account_sid=cfg["TWILIO_ACCOUNT_SID"],
                      http_client=http)
    return Client(cfg["TWILIO_ACCOUNT_SID"], cfg["TWILIO_AUTH_TOKEN"], http_client=http)


def twilio_configured() -> bool:
    """Whether the environment has what Twilio sending needs."""
    cfg = current_app.config
    auth = cfg.get("TWILIO_AUTH_TOKEN") or (cfg.get("TWILIO_API_KEY") and cfg.get("TWILIO_API_SECRET"))
    sender = cfg.get("TWILIO_MESSAGING_SERVICE_SID") or cfg.get("TWILIO_FROM_NUMBER")
    return bool(cfg.get("TWILIO_ACCOUNT_SID") and auth and sender)


# Twilio error codes that will not get better by retrying (bad or unreachable numbers...).
PERMANENT_TWILIO_CODES = {21211, 21214, 21408, 21610, 21612, 21614, 63003, 63016}


def send_text(channel: str, to: str, body: str, status_callback: str | None) -> SendResult:
    """Send an SMS or WhatsApp message through the configured backend."""
    cfg = current_app.config
    if cfg["MILO_SMS_BACKEND"] == "console":
        provider_id = f"console-{uuid.uuid4().hex[:16]}"
        log.warning("[console %s] to %s: %s", channel, to, body)
        return SendResult(SENT, provider_id=provider_id)
    if not twilio_configured():
        return SendResult(TEMPORARY, error="Twilio is not configured (TWILIO_* variables)")
    from twilio.base.exceptions import TwilioException, TwilioRestException

    params = {"to": to, "body": body}
    if channel == "whatsapp":
        params["to"] = f"whatsapp:{to}"
        params["from_"] = f"whatsapp:{cfg.get('TWILIO_WHATSAPP_FROM') or cfg.get('TWILIO_FROM_NUMBER')}"
    elif cfg.get("TWILIO_MESSAGING_SERVICE_SID"):
        params["messaging_service_sid"] = cfg["TWILIO_MESSAGING_SERVICE_SID"]
    else:
        params["from_"] = cfg["TWILIO_FROM_NUMBER"]
    if status_callback:
        params["status_callback"] = status_callback
    try:
        created = _twilio_client().messages.create(**params)
    except TwilioRestException as err:
        reason = f"Twilio {err.status} (code {err.code}): {err.msg}"
        if err.code in PERMANENT_TWILIO_CODES or (400 <= err.status < 500 and err.status not in (401, 403, 408, 429)):
            return SendResult(PERMANENT, error=reason)
        return SendResult(TEMPORARY, error=reason)
    except (TwilioException, OSError) as err:
        return SendResult(TEMPORARY, error=f"Twilio could not be reached: {err}")
    except Exception as err:  # requests' own errors (timeouts, connection resets)
        if type(err).__module__.startswith("requests"):
            return SendResult(TEMPORARY, error=f"Twilio could not be reached: {type(err).__name__}")
        raise
    return SendResult(SENT, provider_id=created.sid)
