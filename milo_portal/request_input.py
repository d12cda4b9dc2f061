"""Guards on what a request may carry, so hostile input is a clean 4xx and never a 500.

Everything here is about the shape of the input (characters, number ranges, cookie
format), never about domain rules: those stay in the services.
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from flask import current_app, request, session
from werkzeug.exceptions import BadHost, BadRequest
from werkzeug.routing import IntegerConverter

# The largest id our tables can hold: ids are INTEGER columns, signed 32-bit on PostgreSQL
# (SQLite's are 64-bit). A bigger number reaching the database is "integer out of range"
# (PostgreSQL casts the parameter to the column's type) or an OverflowError (SQLite past
# 64 bits), i.e. a 500, where the answer is simply "no such row". Raise this with a move
# to BIGINT ids.
ID_MAX = 2**31 - 1

# The last list page anyone can ask for: OFFSET (page - 1) * page size stays far inside
# 64 bits (OFFSET is a BIGINT), and no team has fifty million rows in one list.
PAGE_MAX = 1_000_000

# Characters no text column can store: PostgreSQL refuses NUL in text, and lone surrogates
# (which a JSON "\ud800" escape produces) cannot be encoded as UTF-8 by any driver.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

REMEMBER_COOKIE = "remember_token"  # Flask-Login's default name


class UnstorableInput(BadRequest):
    """A 400 for input holding characters no column can store."""

    description = "The request contains characters that cannot be stored (such as a NUL byte)."


class IdConverter(IntegerConverter):
    """``<int:...>`` limited to ASCII digits and 0..ID_MAX: anything else is a 404."""

    regex = r"[0-9]+"

    def __init__(self, map, fixed_digits: int = 0, min: int | None = None, max: int | None = ID_MAX,
                 signed: bool = False) -> None:
        super().__init__(map, fixed_digits=fixed_digits, min=min, max=max, signed=signed)


def int_arg(values: Mapping[str, str], name: str, default: int | None = None, *, minimum: int = 0,
            maximum: int = ID_MAX) -> int | None:
    """``values[name]`` as an int within [minimum, maximum], or ``default`` when absent or not one.

    Only ASCII digits count: str.isdigit() accepts "²", which int() then refuses.
    """
    return _as_int(values.get(name), minimum, maximum, default)


def int_list_arg(values, name: str, *, minimum: int = 0, maximum: int = ID_MAX) -> list[int]:
    """Every ``name`` value (e.g. repeated ``ids``) that is an int within range; the others are ignored."""
    numbers = (_as_int(v, minimum, maximum, None) for v in values.getlist(name))
    return [n for n in numbers if n is not None]


def _as_int(text: str | None, minimum: int, maximum: int, default: int | None) -> int | None:
    text = (text or "").strip()
    # The length check keeps int() away from huge strings (it refuses over 4300 digits).
    if not text or len(text) > len(str(maximum)) or not (text.isascii() and text.isdigit()):
        return default
    number = int(text)
    return number if minimum <= number <= maximum else default


def host_is_invalid() -> bool:
    """True when werkzeug cannot use the request's Host as a name, in either direction.

    Binding the URL map IDNA-encodes it (a label over 63 characters fails: Flask then has
    no URL adapter and records BadHost as the routing error); request.url IDNA-decodes it
    ("xn--", "xn--a" fail with a UnicodeError werkzeug does not catch, and Flask-Login's
    redirect to the login page reads request.url).
    """
    if isinstance(request.routing_exception, BadHost):
        return True
    try:
        request.url
    except UnicodeError:
        return True
    return False


def refuse_invalid_host() -> None:
    """before_request: a 400 for a Host werkzeug cannot encode or decode (see host_is_invalid)."""
    if host_is_invalid():
        raise BadHost()


def _strings(value: Any) -> Iterator[str]:
    """Every string inside a decoded JSON document, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _multidict_strings(values) -> Iterator[str]:
    for key, items in values.lists():
        yield key
        yield from items


def unstorable_input() -> bool:
    """True when the path, query, form, file names or JSON body hold a character we cannot store."""
    if UNSTORABLE.search(request.path):
        return True
    if any(UNSTORABLE.search(s) for s in _multidict_strings(request.args)):
        return True
    if request.mimetype != "multipart/form-data":
        # Keep the raw body readable after the form is parsed (a signed webhook hashes it);
        # such bodies are small (MAX_FORM_MEMORY_SIZE). Uploads are not buffered twice.
        request.get_data(cache=True)
    if any(UNSTORABLE.search(s) for s in _multidict_strings(request.form)):
        return True
    for key, upload in request.files.items(multi=True):
        if UNSTORABLE.search(key) or UNSTORABLE.search(upload.filename or ""):
            return True
    if request.is_json:
        return any(UNSTORABLE.search(s) for s in _strings(request.get_json(silent=True)))
    return False


def refuse_unstorable_input() -> None:
    """before_request: a 400 for input holding NUL bytes or lone surrogates, before any view reads it."""
    if unstorable_input():
        raise UnstorableInput()


def forget_malformed_remember_cookie() -> None:
    """before_request: a non-ASCII "remember me" cookie is treated as no cookie, and deleted.

    We only ever set hex digests; Flask-Login compares the cookie with hmac.compare_digest,
    which raises TypeError on non-ASCII text. "clear" is Flask-Login's own marker for
    "ignore the cookie and delete it in the response" (what logout_user sets).
    """
    name = current_app.config.get("REMEMBER_COOKIE_NAME", REMEMBER_COOKIE)
    value = request.cookies.get(name)
    if value is not None and not value.isascii():
        session["_remember"] = "clear"
