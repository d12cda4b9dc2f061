"""Text that ends up in a message header: names, titles, company and sender names, subjects.

A line break in such a value would split an e-mail header in two (Flask-Mail refuses the
whole message), and other control characters have no business in a name. Forms and the
candidate services clean what people type; messages clean again when they are built, for
values stored before this rule existed.
"""
from __future__ import annotations

import re

# C0 and C1 control characters (tab, CR, LF, ESC...), DEL, and Unicode's line and paragraph
# separators, which some mail software treats as line breaks too.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def one_line(value: str | None) -> str:
    """The value on one line: control characters become spaces, runs of spaces one space, trimmed."""
    if not value:
        return ""
    return " ".join(_CONTROL.sub(" ", value).split())


def has_control_characters(value: str | None) -> bool:
    """Whether the value holds a line break or another control character."""
    return bool(value) and _CONTROL.search(value) is not None
