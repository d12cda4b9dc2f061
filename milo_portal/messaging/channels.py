"""The channels that carry messages: e-mail over SMTP (Flask-Mail) and SMS/WhatsApp over
Twilio's Messages API (or the console, for development).

Every send returns a :class:`SendResult` that says whether the message surely went, surely
failed for good, failed in a way worth retrying, or may or may not have gone (the server
took it but never said so); the dispatcher decides what follows.

Each send has a total deadline (``MILO_SEND_DEADLINE``) on top of the wait for each read
(``MILO_SMTP_TIMEOUT``, ``MILO_TWILIO_TIMEOUT``): a server that answers one byte at a time
cannot hold a send, or the dispatcher, longer than that.
"""
from __future__ import annotations

import logging
import smtplib
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, replace
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, formataddr, make_msgid
from functools import lru_cache

from flask import current_app
from flask_mail import Connection, sanitize_address

from ..clock import now
from ..headers import has_control_characters, one_line

log = logging.getLogger(__name__)

SENT = "sent"
TEMPORARY = "temporary"
PERMANENT = "permanent"
UNKNOWN = "unknown"  # the server may have taken it: in doubt, never re-sent on its own


@dataclass(frozen=True)
class SendResult:
    """Outcome of one send: ``status`` is sent, temporary, permanent or unknown."""

    status: str
    provider_id: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == SENT


class CannotBuild(Exception):
    """A message that cannot be made into what its channel sends; the text says why."""


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


@dataclass(frozen=True)
class BuiltEmail:
    """An e-mail as the bytes that go on the wire, with its envelope (no network needed to make it)."""

    envelope_from: str
    recipients: tuple[str, ...]
    data: bytes
    message_id: str


# --- e-mail -------------------------------------------------------------------------------

class _Clock:
    """How long the next socket operation may wait: the read timeout, never past the deadline."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.deadline: float | None = None  # time.monotonic() the send under way must end by

    def start(self, seconds: float) -> None:
        """A send begins: it must end within ``seconds``."""
        self.deadline = time.monotonic() + seconds

    def stop(self) -> None:
        """The send has ended: back to the plain read timeout."""
        self.deadline = None

    @property
    def expired(self) -> bool:
        """Whether the send under way has run past its deadline."""
        return self.deadline is not None and time.monotonic() >= self.deadline

    def left(self) -> float:
        """Seconds the next operation may wait; TimeoutError once the deadline has passed."""
        if self.deadline is None:
            return self.timeout
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out: the send deadline passed")
        return min(self.timeout, left)


class _DeadlineSocket(socket.socket):
    """A TCP socket whose every read and write waits at most until the send's deadline.

    A socket timeout alone bounds each read; a server trickling one byte per read would
    never trip it. Shrinking the timeout to the time left before each operation bounds
    the whole conversation.
    """

    milo_clock: _Clock

    def recv(self, *args):
        self.settimeout(self.milo_clock.left())
        return super().recv(*args)

    def recv_into(self, *args):
        self.settimeout(self.milo_clock.left())
        return super().recv_into(*args)

    def send(self, *args):
        self.settimeout(self.milo_clock.left())
        return super().send(*args)

    def sendall(self, *args):
        self.settimeout(self.milo_clock.left())  # sendall's timeout covers all of it
        return super().sendall(*args)


class _DeadlineSSLSocket(ssl.SSLSocket):
    """The same for TLS (SMTPS and STARTTLS); the clock comes from the context that made it."""

    def _wait(self) -> None:
        self.settimeout(self.context.milo_clock.left())

    def do_handshake(self, *args):
        self._wait()
        return super().do_handshake(*args)

    def read(self, *args):
        self._wait()
        return super().read(*args)

    def recv(self, *args):
        self._wait()
        return super().recv(*args)

    def recv_into(self, *args):
        self._wait()
        return super().recv_into(*args)

    def write(self, *args):
        self._wait()
        return super().write(*args)

    def send(self, *args):
        self._wait()
        return super().send(*args)

    def sendall(self, *args):
        self._wait()
        return super().sendall(*args)


def _tls_context(clock: _Clock) -> ssl.SSLContext:
    """The TLS context smtplib uses by default (no certificate check), with deadline-bound sockets."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.sslsocket_class = _DeadlineSSLSocket
    context.milo_clock = clock
    return context


class _Client(smtplib.SMTP):
    """smtplib's client on deadline-bound sockets, which knows when a message's data has all gone out."""

    milo_clock: _Clock
    data_sent = False  # the end-of-data marker of the current message went out
    _in_data = False

    def _get_socket(self, host, port, timeout):
        raw = socket.create_connection((host, port), self.milo_clock.left(), self.source_address)
        sock = _DeadlineSocket(raw.family, raw.type, raw.proto, fileno=raw.detach())
        sock.milo_clock = self.milo_clock
        return sock

    def data(self, msg):
        self._in_data = True
        try:
            return super().data(msg)
        finally:
            self._in_data = False

    def send(self, s):
        super().send(s)
        # smtplib sends the message body, ending in CRLF.CRLF, in one call after the 354.
        if self._in_data and isinstance(s, bytes) and s.endswith(b"\r\n.\r\n"):
            self.data_sent = True


class _SSLClient(smtplib.SMTP_SSL, _Client):
    """SMTPS: smtplib wraps our deadline-bound socket with the context's deadline-bound TLS socket."""


class TimeoutConnection(Connection):
    """Flask-Mail's SMTP connection with a read timeout and a total deadline per message.

    It connects on the first send (not on ``with``), so connecting counts towards that
    message's deadline; a batch reuses it, and a failed send closes it.
    """

    def __init__(self, mail, timeout: float, deadline: float) -> None:
        super().__init__(mail)
        self.clock = _Clock(timeout)
        self.deadline = deadline

    def __enter__(self) -> "TimeoutConnection":
        return self

    def configure_host(self):
        """Connect (TLS, login) on deadline-bound sockets; called within a send's deadline."""
        context = _tls_context(self.clock)
        host = _SSLClient(context=context) if self.mail.use_ssl else _Client()  # not connected yet
        host.milo_clock = self.clock
        host.set_debuglevel(int(self.mail.debug))
        host._host = self.mail.server  # smtplib sets it only when given a host at creation; TLS checks it
        try:
            host.connect(self.mail.server, self.mail.port)
            if self.mail.use_tls:
                host.starttls(context=context)
            if self.mail.username and self.mail.password:
                host.login(self.mail.username, self.mail.password)
        except BaseException:
            host.close()
            raise
        return host

    def abort(self) -> None:
        """Hang up without a goodbye (after a failure: the server may be slow or gone)."""
        if self.host is not None:
            self.host.close()
            self.host = None

    def close(self) -> None:
        """Say goodbye (within the read timeout), or just hang up."""
        if self.host is not None:
            self.clock.start(self.clock.timeout)
            try:
                self.host.quit()
            except (smtplib.SMTPException, OSError):
                self.host.close()
            finally:
                self.clock.stop()
            self.host = None

    def __exit__(self, exc_type, exc_value, tb) -> None:
        # Closing a connection the server already dropped must not hide the real outcome.
        self.close()


def smtp_connection() -> TimeoutConnection:
    """A new SMTP connection (use as a context manager; reuse it for a batch)."""
    cfg = current_app.config
    return TimeoutConnection(current_app.extensions["mail"], cfg["MILO_SMTP_TIMEOUT"], cfg["MILO_SEND_DEADLINE"])


@lru_cache(maxsize=64)
def _header(name: str, value: str):
    """A header as the SMTP policy parses it, kept for the next messages that carry the same one.

    The sender, its Reply-To and List-Unsubscribe-Post are the same for a whole backlog and
    Date for every message of the same second; parsing an address header again for each
    message cost about a millisecond. The header objects are immutable and the policy's own
    entry point makes them, so a value it refuses (a line break) is refused as before.
    """
    return SMTP_POLICY.header_store_parse(name, value)[1]


@lru_cache(maxsize=16)
def _envelope_address(address: tuple[str, str] | str) -> str:
    """The envelope form of an address (the sender's is the same for every message)."""
    return sanitize_address(address)


def build_email(email: Email) -> EmailMessage:
    """The MIME message: multipart/alternative (text, then HTML) at the top, our own
    Message-ID, one-click List-Unsubscribe.

    The subject and the sender's name are put on one line whatever they hold; an address
    holding a line break is refused (the header policy raises) rather than folded in.
    """
    sender = formataddr((one_line(email.sender[0]), email.sender[1])) if isinstance(email.sender, tuple) \
        else email.sender
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = _header("From", sender)
    msg["To"] = email.to
    if email.reply_to:
        msg["Reply-To"] = _header("Reply-To", email.reply_to)
    msg["Subject"] = one_line(email.subject)
    msg["Date"] = _header("Date", format_datetime(now()))
    msg["Message-ID"] = make_msgid(domain=email.message_id_domain)
    if email.list_unsubscribe:
        msg["List-Unsubscribe"] = email.list_unsubscribe
        msg["List-Unsubscribe-Post"] = _header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
    # set_content + add_alternative make the top level multipart/alternative itself: no
    # multipart/mixed wrapper around a single part, which some filters score as odd.
    msg.set_content(email.text)
    msg.add_alternative(email.html, subtype="html")
    return msg


def prepare_email(email: Email) -> BuiltEmail:
    """Build an e-mail's bytes and envelope; raise CannotBuild with a reason a recruiter can read."""
    if email.reply_to is not None and not email.reply_to.strip():
        email = replace(email, reply_to=None)  # an empty reply-to (stored by an older version) is none
    addresses = [email.to, email.sender[1] if isinstance(email.sender, tuple) else email.sender, email.reply_to]
    for address in addresses:
        if address is not None and (has_control_characters(address) or not address.strip()):
            raise CannotBuild(f"The address {address!r} is not valid: it holds a line break or another "
                              "control character.")
    try:
        message = build_email(email)
        data = message.as_bytes()
        envelope_from = _envelope_address(email.sender)
        recipients = (sanitize_address(email.to),)
    except Exception as err:  # a bad address, an encoding that fails...: this message only
        raise CannotBuild(f"This e-mail cannot be built: {type(err).__name__}: {err}") from None
    return BuiltEmail(envelope_from, recipients, data, message["Message-ID"].strip("<>"))


def classify_smtp_error(err: BaseException, data_sent: bool = False, deadline: float | None = None) -> SendResult:
    """Temporary (retry later), permanent (give up) or unknown, with a reason a recruiter can read.

    ``data_sent``: the whole message had gone out when it happened. ``deadline``: the send's
    deadline (in seconds) had passed.
    """
    if data_sent and not isinstance(err, smtplib.SMTPResponseException):
        # The end of the message went out and no reply came back (cut at the deadline, a
        # read timeout, the connection dropped). The server may well have accepted it:
        # sending it again could deliver it twice, so it is in doubt, for a person to decide.
        waited = f" within {deadline:g} s" if deadline else ""
        return SendResult(UNKNOWN, error=f"The mail server received the message but did not confirm it{waited}: "
                                         "it may or may not have been accepted")
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
    if deadline:
        # Cut before the end of the message went out: the server cannot have accepted it.
        return SendResult(TEMPORARY, error=f"The mail server did not finish within {deadline:g} s")
    if isinstance(err, (socket.timeout, TimeoutError)) or (
            isinstance(err, smtplib.SMTPServerDisconnected) and "timed out" in str(err)):
        return SendResult(TEMPORARY, error="The mail server did not answer in time")
    if isinstance(err, ConnectionRefusedError):
        return SendResult(TEMPORARY, error="The mail server refused the connection")
    if isinstance(err, (smtplib.SMTPException, OSError)):
        return SendResult(TEMPORARY, error=f"Mail server problem: {err}")
    # Anything else happened before the end of the message went out, so it was not sent.
    # It may be this message or the set-up (TLS...): retried with backoff, up to the last attempt.
    return SendResult(TEMPORARY, error=f"This e-mail could not be sent: {type(err).__name__}: {err}")


def send_built(built: BuiltEmail, connection: TimeoutConnection | None = None) -> SendResult:
    """Send one built e-mail over ``connection`` if given (batches reuse one), else a new one.

    The whole conversation for this message (connecting if needed, MAIL, RCPT, DATA and
    the final reply) ends by the send deadline.
    """
    conn = connection if connection is not None else smtp_connection()
    conn.clock.start(conn.deadline)
    try:
        if conn.host is None:
            conn.host = conn.configure_host()
        conn.host.data_sent = False
        conn.host.sendmail(built.envelope_from, list(built.recipients), built.data)
    except Exception as err:  # every kind is classified; the connection is closed either way
        data_sent = bool(conn.host is not None and conn.host.data_sent)
        deadline = conn.deadline if conn.clock.expired else None
        conn.clock.stop()
        conn.abort()  # it may be unusable now: the next send opens a new one
        return classify_smtp_error(err, data_sent=data_sent, deadline=deadline)
    conn.clock.stop()
    if connection is None:
        conn.close()
    return SendResult(SENT, provider_id=built.message_id)


def send_email(email: Email, connection: TimeoutConnection | None = None) -> SendResult:
    """Build and send one e-mail; one that cannot be built is a permanent failure with the reason."""
    try:
        built = prepare_email(email)
    except CannotBuild as err:
        return SendResult(PERMANENT, error=str(err))
    return send_built(built, connection)


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


def texts_can_go() -> bool:
    """Whether SMS and WhatsApp messages reach people (the console backend only logs them)."""
    return current_app.config.get("MILO_SMS_BACKEND") == "twilio" and twilio_configured()


def twilio_configured() -> bool:
    """Whether the environment has what Twilio sending needs."""
    cfg = current_app.config
    auth = cfg.get("TWILIO_AUTH_TOKEN") or (cfg.get("TWILIO_API_KEY") and cfg.get("TWILIO_API_SECRET"))
    sender = cfg.get("TWILIO_MESSAGING_SERVICE_SID") or cfg.get("TWILIO_FROM_NUMBER")
    return bool(cfg.get("TWILIO_ACCOUNT_SID") and auth and sender)


# Twilio error codes that will not get better by retrying (bad or unreachable numbers...).
PERMANENT_TWILIO_CODES = {21211, 21214, 21408, 21610, 21612, 21614, 63003, 63016}


class _StillRunning(Exception):
    """A call did not finish by its deadline (it goes on in its helper thread)."""


def _within(seconds: float, func, /, *args, **kwargs):
    """``func(*args, **kwargs)`` run in a helper thread; _StillRunning if it has not returned in time.

    Twilio's client (requests) bounds each read, not a whole request. The helper thread is
    a daemon left to end by itself (its read timeout ends it, unless the server trickles);
    the caller goes on at the deadline either way.
    """
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = func(*args, **kwargs)
        except BaseException as err:  # handed to the caller below
            outcome["error"] = err

    worker = threading.Thread(target=run, name="milo-twilio-request", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise _StillRunning()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def send_text(channel: str, to: str, body: str, status_callback: str | None) -> SendResult:
    """Send an SMS or WhatsApp message through the configured backend, within the send deadline."""
    cfg = current_app.config
    if cfg["MILO_SMS_BACKEND"] == "console":
        provider_id = f"console-{uuid.uuid4().hex[:16]}"
        log.warning("[console %s] to %s: %s", channel, to, body)
        return SendResult(SENT, provider_id=provider_id)
    if not twilio_configured():
        return SendResult(TEMPORARY, error="Twilio is not configured (TWILIO_* variables)")
    from requests.exceptions import ReadTimeout
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
    client = _twilio_client()
    deadline = cfg["MILO_SEND_DEADLINE"]
    try:
        created = _within(deadline, client.messages.create, **params)
    except (_StillRunning, ReadTimeout) as err:
        # The request went out and no answer came: Twilio may have queued the message.
        # Sending it again could deliver it twice, so it is in doubt, for a person to decide.
        waited = f"within {deadline} s" if isinstance(err, _StillRunning) else "in time"
        return SendResult(UNKNOWN, error=f"Twilio did not answer {waited}: the message may or may not have been sent")
    except TwilioRestException as err:
        reason = f"Twilio {err.status} (code {err.code}): {err.msg}"
        if err.code in PERMANENT_TWILIO_CODES or (400 <= err.status < 500 and err.status not in (401, 403, 408, 429)):
            return SendResult(PERMANENT, error=reason)
        return SendResult(TEMPORARY, error=reason)
    except (TwilioException, OSError) as err:
        return SendResult(TEMPORARY, error=f"Twilio could not be reached: {err}")
    except Exception as err:  # requests' own errors (connection refused or reset before an answer)
        if type(err).__module__.startswith("requests"):
            return SendResult(TEMPORARY, error=f"Twilio could not be reached: {type(err).__name__}")
        raise
    return SendResult(SENT, provider_id=created.sid)
