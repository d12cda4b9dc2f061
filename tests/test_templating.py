"""Template rendering in the sandbox, and SMS segment counting."""
from __future__ import annotations

import pytest

from milo_portal.messaging.templating import TemplateProblem, make_context, render_text, sms_count
from tests.conftest import at

CTX = make_context(name="Ada Lovelace", role="Analyst", company="Acme", recruiter_name="Rita", link="https://x.test/i/t",
                   deadline_at=at("2026-12-04T17:00:00"), tz_name="Europe/Berlin", duration_minutes=15,
                   support_contact="help@acme.example")


def test_it_renders_the_fixed_variables():
    out = render_text("Hi {{ candidate.first_name }} ({{ candidate.full_name }}), {{ role }} at {{ company }}, "
                      "{{ duration }}, by {{ deadline }}: {{ link }} — {{ recruiter_name }}, {{ support_contact }}", CTX)
    assert out == ("Hi Ada (Ada Lovelace), Analyst at Acme, 15 minutes, by Friday 04 December, 18:00 CET: "
                   "https://x.test/i/t — Rita, help@acme.example")


@pytest.mark.parametrize("source,expected", [
    ("{{ ''.__class__.__mro__ }}", "may not use"),
    ("{{ candidate.nme }}", "Unknown variable part “nme”"),
    ("{% for %}", "Line 1"),
    ("{{ salary }}", "Unknown variable “salary”"),
    ("{{ link.__class__ }}", "may not use"),
    ("{{ candidate.__init__.__globals__ }}", "may not use"),
    ("{% if x %}{% endif %}", "Unknown variable “x”"),
    ("{{ role + 1 }}", "cannot be rendered"),
])
def test_it_refuses_unsafe_unknown_and_broken_templates(source, expected):
    with pytest.raises(TemplateProblem) as err:
        render_text(source, CTX)
    assert expected in err.value.message


def test_output_length_is_capped():
    with pytest.raises(TemplateProblem, match="Too long"):
        render_text("{% for i in range(100) %}{{ link }}{% endfor %}", CTX, limit=500)


def test_a_huge_range_is_refused_by_the_sandbox():
    with pytest.raises(TemplateProblem):
        render_text("{% for i in range(10**9) %}x{% endfor %}", CTX)


@pytest.mark.parametrize("text,encoding,units,segments", [
    ("a" * 160, "GSM-7", 160, 1),
    ("a" * 161, "GSM-7", 161, 2),
    ("a" * 306, "GSM-7", 306, 2),
    ("a" * 307, "GSM-7", 307, 3),
    ("€", "GSM-7", 2, 1),
    ("[" * 80, "GSM-7", 160, 1),
    ("[" * 81, "GSM-7", 162, 2),
    ("🙂", "UCS-2", 2, 1),
    ("é" * 70, "GSM-7", 70, 1),
    ("ç" * 70, "UCS-2", 70, 1),
    ("ç" * 71, "UCS-2", 71, 2),
    ("ç" * 134, "UCS-2", 134, 2),
    ("ç" * 135, "UCS-2", 135, 3),
    ("", "GSM-7", 0, 0),
])
def test_sms_segments(text, encoding, units, segments):
    count = sms_count(text)
    assert (count.encoding, count.units, count.segments) == (encoding, units, segments)


def test_one_emoji_makes_a_text_ucs2():
    assert sms_count("a" * 69 + "🙂").encoding == "UCS-2"
    assert sms_count("a" * 68 + "🙂").segments == 1   # 68 + 2 UTF-16 units = 70
    assert sms_count("a" * 69 + "🙂").segments == 2   # 71 units
