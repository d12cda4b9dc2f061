"""Structured logs: one JSON line per request and per message sent or failed.

They carry ids, never names, e-mail addresses, phone numbers or tokens: the path is the URL
rule (``/i/<token>``), not the path asked for, and a message is named by its id, its
candidate's id, kind and channel.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import time

from flask import Flask, g, request

log = logging.getLogger("milo.events")


def event(name: str, **fields) -> None:
    """Log one structured event as a single JSON line (``event`` plus ``fields``)."""
    log.info(json.dumps({"event": name, **fields}, separators=(",", ":"), default=str))


def message_outcome(outcome: str, message, error: str | None = None) -> None:
    """One line per message that was sent or failed: ids and kinds only."""
    fields = {"message_id": message.id, "candidate_id": message.candidate_id, "kind": message.kind,
              "step": message.step, "channel": message.channel, "attempts": message.attempts}
    if error:
        # The error text of a send may quote the recipient (SMTP's "Recipient refused" does):
        # only its first word, the class of problem, goes in the log; the outbox page has the rest.
        fields["error"] = error.split(":")[0][:80]
    event(f"message_{outcome}", **fields)


def init_request_logs(app: Flask) -> None:
    """Log each request when it ends: method, URL rule, endpoint, status, duration."""
    if not app.testing and not log.handlers:
        # Plain lines on stderr (gunicorn's error log), whatever the root logger does.
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False

    @app.before_request
    def _start_clock():
        g.milo_started = time.perf_counter()

    @app.after_request
    def _log_request(response):
        started = g.get("milo_started")
        rule = request.url_rule.rule if request.url_rule is not None else None
        event("request", method=request.method, path=rule or "(no route)", endpoint=request.endpoint,
              status=response.status_code,
              duration_ms=round((time.perf_counter() - started) * 1000, 1) if started else None)
        return response


# werkzeug's request handler writes '<address> - - [<time>] "GET /i/<the token> HTTP/1.1" 200 -'.
_HANDLER_LINE = re.compile(r"^\S+ - - \[")
_TOKEN_IN_PATH = re.compile(r"(/(?:i|s|t|u)/|/hooks/[^/\s]+/)[^\s/?\"'#]+")


class DevServerLines(logging.Filter):
    """For ``flask run`` (``make run``): no raw request lines, and no token in werkzeug's other lines.

    A request line carries the path asked for, i.e. a candidate's link token; the app's own
    JSON line per request (the URL rule, never the token) already records every request.
    Start-up lines ("Running on ...") pass unchanged; an error line about a request (a
    malformed one quotes it) passes with any token replaced by ``<token>``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str) or not _HANDLER_LINE.match(record.msg):
            return True
        if record.msg.rstrip().endswith('"%s" %s %s'):  # WSGIRequestHandler.log_request
            return False
        record.msg, record.args = _TOKEN_IN_PATH.sub(r"\1<token>", record.getMessage()), None
        return True


def quiet_dev_server() -> None:
    """Install DevServerLines on werkzeug's logger (once), for the development server."""
    logger = logging.getLogger("werkzeug")
    if not any(isinstance(f, DevServerLines) for f in logger.filters):
        logger.addFilter(DevServerLines())
