"""Structured logs: one JSON line per request and per message sent or failed.

They carry ids, never names, e-mail addresses, phone numbers or tokens: the path is the URL
rule (``/i/<token>``), not the path asked for, and a message is named by its id, its
candidate's id, kind and channel.
"""
from __future__ import annotations

import json
import logging
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
