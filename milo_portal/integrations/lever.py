"""Lever's API, read for the applicant behind a webhook event that carries ids only.

Lever's ``applicationCreated`` event names an opportunity (``data.opportunityId``) and an
application (``data.applicationId``). ``fetch`` reads the opportunity with its applications
expanded (``GET /opportunities/{id}?expand=applications``, HTTP Basic with the API key as
the user and an empty password) and returns the person (name, first e-mail, first phone) and
the posting of that application: the job the integration's table maps to an interview.

It makes one HTTP request and never opens a transaction: the caller has ended its own
(``assert_no_transaction`` fails the tests otherwise). Redirects are not followed (the
Authorization header would go with them). Any failure raises ``Unavailable`` with a reason
for the delivery log, which offers "Process again".
"""
from __future__ import annotations

import base64
import json
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import quote

from ..transactions import assert_no_transaction

MAX_ANSWER = 2 * 1024 * 1024  # an opportunity with its applications is a few kilobytes


class Unavailable(Exception):
    """The opportunity could not be read; ``reason`` says why, for the delivery log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Api:
    """Where Lever's API is (``LEVER_API_BASE_URL``) and how long to wait (``MILO_LEVER_TIMEOUT``)."""

    base_url: str
    timeout: float

    @classmethod
    def from_config(cls, config) -> "Api":
        return cls(config["LEVER_API_BASE_URL"].rstrip("/"), config["MILO_LEVER_TIMEOUT"])


@dataclass(frozen=True)
class Opportunity:
    """What the app needs of one opportunity."""

    name: str
    email: str
    phone: str
    posting: str


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # a 3xx is answered as an error below


_opener = urllib.request.build_opener(_NoRedirects)


def _text(value) -> str:
    return value.strip() if isinstance(value, str) else (str(value) if isinstance(value, (int, float)) else "")


def _first(items, key: str | None = None) -> str:
    for item in items if isinstance(items, list) else []:
        value = _text(item.get(key) if key and isinstance(item, dict) else item)
        if value:
            return value
    return ""


def _posting(applications, application_id: str) -> str:
    """The posting of the event's application (else of the first that has one); an id or an expanded object."""
    found = [a for a in applications if isinstance(a, dict)] if isinstance(applications, list) else []
    found.sort(key=lambda a: _text(a.get("id")) != application_id)
    for application in found:
        posting = application.get("posting")
        posting = posting.get("id") if isinstance(posting, dict) else posting
        if _text(posting):
            return _text(posting)
    return ""


def read(answer: dict, application_id: str) -> Opportunity:
    """The person and posting in an opportunity answer (``{"data": {...}}``)."""
    data = answer.get("data") if isinstance(answer.get("data"), dict) else answer
    phones = data.get("phones")
    return Opportunity(name=_text(data.get("name")), email=_first(data.get("emails")),
                       phone=_first(phones, "value") or _first(phones),
                       posting=_posting(data.get("applications"), application_id))


def fetch(session, api: Api, api_key: str, opportunity_id: str, application_id: str = "") -> Opportunity:
    """Read one opportunity from Lever's API; raise Unavailable with the reason when it cannot be read."""
    assert_no_transaction(session, "Lever API request")
    if not opportunity_id:
        raise Unavailable("the event names no opportunity (data.opportunityId)")
    url = f"{api.base_url}/opportunities/{quote(opportunity_id, safe='')}?expand=applications"
    credentials = base64.b64encode(f"{api_key}:".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {credentials}",
                                                   "Accept": "application/json", "User-Agent": "Milo Portal"})
    try:
        with _opener.open(request, timeout=api.timeout) as response:
            raw = response.read(MAX_ANSWER + 1)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code in (401, 403):
            raise Unavailable(f"Lever refused the API key (HTTP {err.code}): save a key that may read "
                              f"opportunities on this page") from None
        if err.code == 404:
            raise Unavailable(f"Lever has no opportunity {opportunity_id[:80]} (HTTP 404)") from None
        if err.code == 429:
            raise Unavailable("Lever's rate limit was reached (HTTP 429)") from None
        raise Unavailable(f"Lever answered HTTP {err.code}") from None
    except (socket.timeout, TimeoutError):
        raise Unavailable(f"Lever did not answer within {api.timeout:g} s") from None
    except urllib.error.URLError as err:
        if isinstance(err.reason, (socket.timeout, TimeoutError)):
            raise Unavailable(f"Lever did not answer within {api.timeout:g} s") from None
        raise Unavailable(f"could not reach Lever ({str(err.reason)[:120]})") from None
    except OSError as err:
        raise Unavailable(f"could not reach Lever ({str(err)[:120]})") from None
    if len(raw) > MAX_ANSWER:
        raise Unavailable("Lever's answer is larger than 2 MB")
    try:
        answer = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise Unavailable("Lever's answer is not JSON") from None
    if not isinstance(answer, dict):
        raise Unavailable("Lever's answer is not a JSON object")
    return read(answer, application_id)
