"""Real servers on loopback for the tests: an SMTP sink (aiosmtpd), SMTP servers that
misbehave (silent, trickling, never confirming), and HTTP servers that behave like Twilio's
Messages API (optionally slow) and Lever's opportunities API."""
from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)


class SmtpSink:
    """An SMTP server that keeps every message it accepts; ``reject`` makes it refuse some."""

    def __init__(self, **controller_options) -> None:
        """``controller_options``: aiosmtpd's, e.g. ``tls_context`` (STARTTLS) or ``ssl_context`` (SMTPS)."""
        self.messages: list[Received] = []
        self.reject: dict[str, str] = {}  # recipient -> SMTP reply
        self.lock = threading.Lock()
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, **controller_options)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.reject:
            return self.reject[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted"

    def start(self) -> "SmtpSink":
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.02)
        raise AssertionError(f"expected {count} messages, got {len(self.messages)}")


class UnconfirmingSmtpSink(SmtpSink):
    """Takes a whole message and then never gives the final reply (nor hangs up)."""

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        await asyncio.sleep(3600)
        return "250 Message accepted"


class TricklingSmtpServer:
    """Speaks SMTP correctly but writes every reply one byte per ``interval`` seconds
    (a mail server "answering one byte a second"); it accepts whatever it is sent."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.conns: list[socket.socket] = []

    def start(self) -> "TricklingSmtpServer":
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _say(self, conn: socket.socket, line: str) -> None:
        for byte in (line + "\r\n").encode():
            if not self.running:
                return
            conn.sendall(bytes([byte]))
            time.sleep(self.interval)

    def _serve(self, conn: socket.socket) -> None:
        try:
            reader = conn.makefile("rb")
            self._say(conn, "220 trickle.example ESMTP")
            while self.running:
                line = reader.readline()
                if not line:
                    return
                verb = line.split(b" ")[0].strip().upper()
                if verb == b"DATA":
                    self._say(conn, "354 Go ahead")
                    while reader.readline() not in (b".\r\n", b""):
                        pass
                    self._say(conn, "250 Queued")
                elif verb == b"QUIT":
                    self._say(conn, "221 Bye")
                    return
                else:
                    self._say(conn, "250 trickle.example" if verb in (b"EHLO", b"HELO") else "250 OK")
        except OSError:
            return

    def stop(self) -> None:
        self.running = False
        for c in self.conns:
            c.close()
        self.sock.close()


class SilentServer:
    """Accepts TCP connections and never says a word (a hung mail server)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.running = True

    def _accept(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def start(self) -> "SilentServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.running = False
        for c in self.conns:
            c.close()
        self.sock.close()


def _answer_json(handler: BaseHTTPRequestHandler, status: int, body: dict) -> None:
    """Answer a fake API's request with JSON; a client that gave up waiting (a deadline or
    timeout test) has closed the connection, which is no failure of the fake."""
    data = json.dumps(body).encode()
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


class _FakeApi:
    """What the fake HTTP APIs share: serving their handler on loopback, and stopping."""

    server: ThreadingHTTPServer | None

    def _serve(self, handler: type[BaseHTTPRequestHandler]):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class FakeTwilio(_FakeApi):
    """Behaves like POST /2010-04-01/Accounts/{sid}/Messages.json of Twilio's API."""

    requests: list[dict] = field(default_factory=list)
    fail_with: tuple[int, dict] | None = None
    delay: float = 0.0  # seconds before it answers (the request is recorded at once)
    received_at: list[float] = field(default_factory=list)  # time.monotonic() of each request
    server: ThreadingHTTPServer | None = None

    def start(self) -> "FakeTwilio":
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                outer.requests.append({"path": self.path, "form": form,
                                       "auth": self.headers.get("Authorization", "")})
                outer.received_at.append(time.monotonic())
                if outer.delay:
                    time.sleep(outer.delay)
                if outer.fail_with:
                    status, body = outer.fail_with
                else:
                    status = 201
                    body = {"sid": "SM" + uuid.uuid4().hex, "status": "queued", "to": form.get("To"),
                            "from": form.get("From"), "body": form.get("Body"),
                            "account_sid": self.path.split("/")[3], "num_segments": "1"}
                _answer_json(self, status, body)

        return self._serve(Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"


@dataclass
class FakeLever(_FakeApi):
    """Behaves like GET /v1/opportunities/{id} of Lever's API (HTTP Basic, the key as the user).

    ``opportunities`` maps an id to the opportunity Lever would return (wrapped in ``data``);
    a wrong key is a 401, an unknown id a 404; ``fail_with`` answers every request with
    (status, body), ``delay`` waits first, and ``on_request`` is called with each path while
    the request is held (to look at the app's database meanwhile).
    """

    key: str = "lever-key-0123456789"
    opportunities: dict = field(default_factory=dict)
    requests: list[dict] = field(default_factory=list)
    fail_with: tuple[int, dict] | None = None
    delay: float = 0.0
    on_request: object = None
    server: ThreadingHTTPServer | None = None

    def start(self) -> "FakeLever":
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization", "")})
                if outer.on_request is not None:
                    outer.on_request(self.path)
                if outer.delay:
                    time.sleep(outer.delay)
                expected = "Basic " + base64.b64encode(f"{outer.key}:".encode()).decode()
                found = outer.opportunities.get(self.path.split("?")[0].rsplit("/", 1)[-1])
                if outer.fail_with:
                    status, body = outer.fail_with
                elif self.headers.get("Authorization", "") != expected:
                    status, body = 401, {"code": "Unauthorized", "message": "Invalid API key"}
                elif not self.path.startswith("/v1/opportunities/") or found is None:
                    status, body = 404, {"code": "ResourceNotFound", "message": "Not found"}
                else:
                    status, body = 200, {"data": found}
                _answer_json(self, status, body)

        return self._serve(Handler)

    @property
    def url(self) -> str:
        """The API's base URL, as LEVER_API_BASE_URL takes it."""
        return f"http://127.0.0.1:{self.server.server_port}/v1"
