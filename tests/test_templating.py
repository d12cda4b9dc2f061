"""Template rendering in the sandbox, and SMS segment counting."""
from __future__ import annotations

import pytest

from milo_portal.messaging.templating import TemplateProblem, make_context, render_text, sms_count
from tests.conftest import at
from tests.timing import finishes_within

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


# --- bounds on what a template may compute ---------------------------------------------------

NESTED_RANGES = "{% for i in range(1000) %}{% for j in range(1000) %}{% for k in range(1000) %}{% endfor %}{% endfor %}{% endfor %}"


@pytest.mark.parametrize("source,expected", [
    ("{{ (3 ** (2 ** 28)) % 7 }}", "number too large"),
    ("{{ 'x' * 10**8 }}", "repeats text"),
    (NESTED_RANGES, "too much work"),
])
def test_the_templates_that_froze_a_worker_are_refused(source, expected):
    """Defect: a huge power froze a preview until gunicorn's 60 s timeout; a huge repeat and
    nested ranges ran to the end. Each is refused, with a message for the editor."""
    def render():
        with pytest.raises(TemplateProblem) as err:
            render_text(source, CTX)
        return err.value.message

    assert expected in finishes_within(20, render)[0]


@pytest.mark.parametrize("source,expected", [
    ("{{ 10 ** 100 }}", "number too large"),
    ("{% set ns = namespace(x=2) %}{% for i in range(40) %}{% set ns.x = ns.x * ns.x %}{% endfor %}{{ ns.x }}",
     "number too large"),
    ("{% set ns = namespace(x='ab') %}{% for i in range(40) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}{{ ns.x }}",
     "longer than"),
    ("{% set ns = namespace(x='ab') %}{% for i in range(40) %}{% set ns.x = ns.x + ns.x %}{% endfor %}{{ ns.x }}",
     "longer than"),
    ("{% set ns = namespace(x=[1]) %}{% for i in range(40) %}{% set ns.x = [ns.x, ns.x] %}{% endfor %}{{ ns.x }}",
     "longer than"),
    ("{{ [role] * 10**6 }}", "repeats"),
    ("{{ range(10**9)|list }}", "at most 1,000 numbers"),
    # Macro calls are slow steps: on a busy machine the time limit may come first.
    ("{% macro m(d) %}{% if d %}{{ m(d - 1) }}{{ m(d - 1) }}{% endif %}{% endmacro %}{{ m(40) }}",
     "too much work|takes too long"),
    ("{% for a in link %}{% for b in link %}{% for c in link %}{% for d in link %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}",
     "too much work"),
    ("{{ role|center(10**9) }}", "longer than"),
    ("{{ role|indent(10**6) }}", "Indent by"),
    ("{{ [1]|batch(10**9, 0)|list }}", "batch()"),
    ("{{ role|replace('', role * 1000) }}", "longer than"),
    ("{{ (role * 100)|join(role * 100) }}", "longer than"),
    ("{{ '%999999999s' % role }}", "Formatting text with %"),
    ("{{ '{:>999999999}'.format(role) }}", "may not use"),
    ("{{ role.ljust(10**9) }}", "may not use"),
    ("{{ (10).to_bytes(10**9, 'big') }}", "may not use"),
    ("{{ '%s'|format(role) }}", "No filter named"),
    ("{{ lipsum(10**6) }}", "Unknown variable “lipsum”"),
])
def test_arithmetic_repeats_ranges_and_work_are_bounded(source, expected):
    def render():
        with pytest.raises(TemplateProblem) as err:
            render_text(source, CTX)
        return err.value.message

    message = finishes_within(20, render)[0]
    assert any(part in message for part in expected.split("|")), message


def test_the_time_limit_stops_a_template_that_stays_under_the_step_budget(monkeypatch):
    from milo_portal.messaging import templating

    monkeypatch.setattr(templating, "MAX_STEPS", 10**12)
    source = "{% macro m(d) %}{% if d %}{{ m(d - 1) }}{{ m(d - 1) }}{% endif %}{% endmacro %}{{ m(60) }}"

    def render():
        with pytest.raises(templating.RenderTimeout) as err:
            render_text(source, CTX)
        return err.value.message

    assert "takes too long" in finishes_within(20, render)[0]


def test_output_is_read_in_pieces_and_abandoned_once_far_too_long():
    with pytest.raises(TemplateProblem) as err:
        render_text("{% for i in range(1000) %}{% for j in range(100) %}{{ link }}{% endfor %}{% endfor %}", CTX,
                    limit=1600)
    assert err.value.message.startswith("Too long: more than 4,200 characters")


def test_ordinary_templates_still_render():
    out = render_text("{% set ns = namespace(n=0) %}{% for w in role.split() %}{% set ns.n = ns.n + 1 %}{% endfor %}"
                      "{{ ns.n }} {{ role|upper|replace('A', 'a') }} {{ (2 ** 10) // 3 }} {{ [1, 2]|join(', ') }} "
                      "{{ candidate.full_name|truncate(5, leeway=0) }} {{ deadline[:6] }} {{ company ~ '!' }}", CTX)
    assert out == "1 aNaLYST 341 1, 2 Ad... Friday Acme!"


# --- subjects and length warnings ------------------------------------------------------------

def test_a_long_subject_is_shortened_at_a_word_boundary():
    from milo_portal.messaging.templating import MAX_SUBJECT, make_context, render_subject

    ctx = make_context(name="Ada", role="Senior " + "logistics coordinator " * 12, company="Acme", recruiter_name="R",
                       link="https://x.test/i/t", deadline_at=None, tz_name="UTC", duration_minutes=15,
                       support_contact="h")
    subject = render_subject("{{ candidate.first_name }}, your interview for {{ role }} at {{ company }}", ctx)
    assert len(subject) <= MAX_SUBJECT and subject.endswith("…")
    assert subject[:-1].split()[-1] in ("logistics", "coordinator")  # whole words only


@pytest.mark.parametrize("text,limit,expected", [
    ("short", 10, "short"),
    ("one two three four", 10, "one two…"),
    ("Supercalifragilistic", 10, "Supercali…"),
    ("one two, three", 9, "one two…"),
])
def test_shorten(text, limit, expected):
    from milo_portal.messaging.templating import shorten

    assert shorten(text, limit) == expected and len(shorten(text, limit)) <= limit


def test_names_and_titles_are_put_on_one_line_in_the_context():
    ctx = make_context(name="Ada\r\nLovelace", role="Analyst\n", company="Acme\tCorp", recruiter_name="Rita\x1b",
                       link="l", deadline_at=None, tz_name="UTC", duration_minutes=15, support_contact="h")
    assert (ctx.candidate.full_name, ctx.candidate.first_name, ctx.role, ctx.company, ctx.recruiter_name) == (
        "Ada Lovelace", "Ada", "Analyst", "Acme Corp", "Rita")


def test_length_warnings_use_the_longest_values_allowed():
    from milo_portal.messaging.templating import length_warnings, longest_context

    longest = longest_context("https://jobs.example.test/i/" + "W" * 32)
    warned = length_warnings("email", "{{ role }} at {{ company }}", "Hi", longest)
    assert set(warned) == {"subject"} and "reaches 404 characters" in warned["subject"]
    assert length_warnings("email", "Your interview at Acme", "Hi {{ role }}", longest) == {}
    sms = " ".join(["{{ role }}"] * 8)
    assert "over the limit of 1,600" in length_warnings("sms", None, sms, longest)["body"]
    assert length_warnings("sms", None, "Hi {{ candidate.first_name }}: {{ link }}", longest) == {}
