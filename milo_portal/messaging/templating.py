"""Rendering user-editable templates safely, and counting SMS segments.

Templates are Jinja in a sandbox with ``StrictUndefined`` over a fixed set of variables: a
typo, an unknown variable or an attempt to reach Python internals is an error shown to the
editor, never a blank in a candidate's message.

A template is code a teammate writes, and it runs in the web process (previews) and in the
dispatcher (sends). So rendering is bounded, the same way for both: arithmetic that would
build huge numbers, repeats and ranges past a size, more than a number of steps (loop
iterations, calls, lookups) or more than a moment of time are refused with a message for
the editor, and the output is read piece by piece and abandoned once it is too long.
"""
from __future__ import annotations

import time
import types
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache, wraps

from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes, pass_eval_context
from jinja2 import filters as jinja_filters
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Cycler, Joiner, Namespace
from jinja2.visitor import NodeTransformer

from ..formatting import format_local
from ..headers import one_line

MAX_SUBJECT = 200
MAX_EMAIL_BODY = 10_000
MAX_SMS_BODY = 1_600  # ten segments: anything longer is a letter, not a text

# Bounds on what one rendering may do. Previews, test sends and real sends share them.
RENDER_SECONDS = 1.0  # a real template renders in milliseconds
MAX_STEPS = 100_000  # loop iterations, calls, filters and lookups in one rendering
MAX_RANGE = 1_000  # numbers one range() may give
MAX_VALUE = 20_000  # characters (or items) of any one value a template builds: twice the longest output
MAX_INT_BITS = 256  # about 77 digits: no message needs a bigger number
MAX_PAD = 100  # characters of indentation or of a line-wrap string

# The variables a template may use, with what they are, for the editor's panel.
VARIABLES = {
    "candidate.first_name": "Candidate's first name",
    "candidate.full_name": "Candidate's full name",
    "role": "Role title of the interview",
    "company": "Company name shown to candidates",
    "recruiter_name": "Name of the recruiter (signs SMS)",
    "link": "The candidate's unique interview link",
    "deadline": "Deadline, in the candidate's time zone",
    "duration": "Expected duration, e.g. “15 minutes”",
    "support_contact": "Who to contact for help",
}
TOP_LEVEL = {name.split(".")[0] for name in VARIABLES}


class TemplateProblem(Exception):
    """A template cannot be saved or rendered; ``field`` is "subject" or "body"."""

    def __init__(self, message: str, field: str = "body") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class TooLong(TemplateProblem):
    """The output is over its limit; ``length`` is how long it got (None: it was cut off)."""

    def __init__(self, message: str, field: str, length: int | None) -> None:
        super().__init__(message, field)
        self.length = length


class RenderTimeout(TemplateProblem):
    """The template ran out of time: rendering it again for another candidate would too."""


@dataclass(frozen=True)
class CandidateVars:
    """What a template may know about the candidate."""

    first_name: str
    full_name: str


@dataclass(frozen=True)
class Context:
    """Everything a template can use (and nothing else)."""

    candidate: CandidateVars
    role: str
    company: str
    recruiter_name: str
    link: str
    deadline: str
    duration: str
    support_contact: str

    def as_dict(self) -> dict:
        return {"candidate": self.candidate, "role": self.role, "company": self.company,
                "recruiter_name": self.recruiter_name, "link": self.link, "deadline": self.deadline,
                "duration": self.duration, "support_contact": self.support_contact}


def make_context(*, name: str | None, role: str, company: str, recruiter_name: str, link: str,
                 deadline_at: datetime | None, tz_name: str, duration_minutes: int, support_contact: str) -> Context:
    """Build the template context for one candidate.

    Names and titles are put on one line here, whatever is stored: they reach e-mail
    subjects, and a line break there would make the message impossible to send.
    """
    full = one_line(name) or "there"
    first = full.split()[0] if full != "there" else "there"
    deadline = format_local(deadline_at, tz_name, "%A %d %B, %H:%M") if deadline_at else "soon"
    return Context(
        candidate=CandidateVars(first_name=first, full_name=full), role=one_line(role), company=one_line(company),
        recruiter_name=one_line(recruiter_name), link=link, deadline=deadline,
        duration=f"{duration_minutes} minutes", support_contact=one_line(support_contact),
    )


# The longest values the app lets in (column and form limits), for the editor's length warnings.
LONGEST_NAME = 200  # candidate name
LONGEST_TITLE = 200  # role title
LONGEST_COMPANY = 200  # company name (interview or team)
LONGEST_RECRUITER = 200  # owner's name (120) or the team's sender name (200)
LONGEST_SUPPORT = 377  # "Name (address)": a 120-character name and a 254-character address
LONGEST_DEADLINE = "Wednesday 30 September, 23:59 +1245"
LONGEST_DURATION = 240  # minutes


def longest_context(link: str) -> Context:
    """A context with the longest value allowed in every variable (``link`` as long as a real one)."""
    word = "W"  # a wide letter, and one word: the first name is the whole name
    return Context(
        candidate=CandidateVars(first_name=word * LONGEST_NAME, full_name=word * LONGEST_NAME),
        role=word * LONGEST_TITLE, company=word * LONGEST_COMPANY, recruiter_name=word * LONGEST_RECRUITER,
        link=link, deadline=LONGEST_DEADLINE, duration=f"{LONGEST_DURATION} minutes",
        support_contact=word * LONGEST_SUPPORT,
    )


# --- the bounded sandbox ------------------------------------------------------------------

class _Refused(Exception):
    """A template went past one of the bounds; the message is for the editor."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _TimedOut(_Refused):
    """A template went past the time limit."""


TOO_BIG = f"This template builds a value longer than {MAX_VALUE:,} characters."
TOO_LARGE_NUMBER = "This template computes a number too large for a message."


@dataclass
class _Budget:
    """Steps taken and the moment one rendering must end by (time.monotonic())."""

    deadline: float
    steps: int = 0


# One budget per rendering, in the thread doing it (dispatch lanes and requests run at once).
_budget: ContextVar[_Budget | None] = ContextVar("milo_template_budget", default=None)


def _tick() -> None:
    """Count one step of the rendering under way; refuse past the step or time limit.

    Jinja also evaluates constant expressions while compiling, with no budget: then only
    the size bounds apply, which keeps that cheap too.
    """
    budget = _budget.get()
    if budget is None:
        return
    budget.steps += 1
    if budget.steps > MAX_STEPS:
        raise _Refused(f"This template does too much work (more than {MAX_STEPS:,} steps): "
                       "look for loops inside loops.")
    if time.monotonic() > budget.deadline:
        raise _TimedOut(f"This template takes too long to fill in (more than {RENDER_SECONDS:g} s).")


def _too_big(value, limit: int = MAX_VALUE) -> bool:
    """Whether a value (nested lists counted in full) could print longer than ``limit``.

    It stops as soon as it knows, so it costs at most ``limit`` steps however the value
    was built (a list holding the same big list many times counts each time).
    """
    left = limit
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            left -= len(item) or 1
        elif isinstance(item, (list, tuple, set, frozenset)):
            left -= len(item) + 1
            stack.extend(item)
        elif isinstance(item, dict):
            left -= len(item) + 1
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, range):
            left -= len(item) + 1
        elif isinstance(item, int):
            left -= item.bit_length() // 3 + 1
        else:
            left -= 1
        if left < 0:
            return True
    return False


def _check(value):
    """The value, unless it is too big to keep."""
    if _too_big(value):
        raise _Refused(TOO_BIG)
    return value


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_power(base, exponent) -> None:
    if _is_int(base) and _is_int(exponent) and exponent > 0 and abs(base) > 1:
        if base.bit_length() * exponent > MAX_INT_BITS:
            raise _Refused(TOO_LARGE_NUMBER)


def _check_product(left, right) -> None:
    if _is_int(left) and _is_int(right):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise _Refused(TOO_LARGE_NUMBER)
        return
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, (str, list, tuple)) and _is_int(times) and times > 1:
            # A repeat is as big as its parts times the count: refuse before building it.
            if times > MAX_VALUE or _too_big(seq, MAX_VALUE // times):
                raise _Refused(f"This template repeats text or a list past {MAX_VALUE:,} characters.")


def _check_sum(left, right) -> None:
    if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
        if _too_big([left, right]):
            raise _Refused(TOO_BIG)


def _check_replace(text, old, new, count=None) -> None:
    text, old, new = str(text), str(old), str(new)
    times = text.count(old) if old else len(text) + 1
    if count is not None and count >= 0:
        times = min(times, count)
    if len(text) + times * (len(new) - len(old)) > MAX_VALUE:
        raise _Refused(TOO_BIG)


def _range(*args) -> range:
    """range() with at most MAX_RANGE numbers."""
    numbers = range(*args)
    try:
        size = len(numbers)
    except OverflowError:
        size = MAX_RANGE + 1
    if size > MAX_RANGE:
        raise _Refused(f"range() in a template gives at most {MAX_RANGE:,} numbers.")
    return numbers


def _loop(iterable):
    """What every {% for %} walks over: one step per item, so loops in loops stop in time."""
    for item in iterable:
        _tick()
        yield item


class _Namespace(Namespace):
    """namespace() whose attributes stay small: a loop cannot double a value each round."""

    def __setitem__(self, name, value) -> None:
        _tick()
        super().__setitem__(name, _check(value))


def _concat(parts) -> str:
    """The ``~`` operator, with its result bounded."""
    _tick()
    if _too_big(parts):
        raise _Refused(TOO_BIG)
    return "".join(str(p) for p in parts)


def _finalize(value):
    """Every {{ expression }} goes through here before it is printed."""
    return _check(value)


def _guarded(func):
    """A Jinja filter, counted as a step and refused when its input or result is too big."""

    @wraps(func)  # keeps jinja_pass_arg (pass_context, pass_environment...)
    def bounded(*args, **kwargs):
        _tick()
        if any(_too_big(a) for a in args) or any(_too_big(v) for v in kwargs.values()):
            raise _Refused(TOO_BIG)
        return _check(func(*args, **kwargs))

    return bounded


def _center(value, width: int = 80) -> str:
    if width > MAX_VALUE:
        raise _Refused(TOO_BIG)
    return jinja_filters.do_center(value, width)


def _indent(s, width=4, first: bool = False, blank: bool = False) -> str:
    if (len(width) if isinstance(width, str) else width) > MAX_PAD:
        raise _Refused(f"Indent by {MAX_PAD} characters at most.")
    return jinja_filters.do_indent(s, width, first, blank)


@jinja_filters.pass_environment
def _wordwrap(environment, s, width: int = 79, break_long_words: bool = True, wrapstring=None,
              break_on_hyphens: bool = True) -> str:
    if wrapstring is not None and len(str(wrapstring)) > MAX_PAD:
        raise _Refused(f"Wrap lines with {MAX_PAD} characters at most.")
    return jinja_filters.do_wordwrap(environment, s, width, break_long_words, wrapstring, break_on_hyphens)


def _batch(value, linecount: int, fill_with=None):
    if linecount > MAX_RANGE:
        raise _Refused(f"batch() takes at most {MAX_RANGE:,} items at a time.")
    return jinja_filters.do_batch(value, linecount, fill_with)


def _slice(value, slices: int, fill_with=None):
    if slices > MAX_RANGE:
        raise _Refused(f"slice() makes at most {MAX_RANGE:,} slices.")
    return jinja_filters.sync_do_slice(value, slices, fill_with)


@pass_eval_context
def _replace(eval_ctx, s, old, new, count=None) -> str:
    _check_replace(s, old, new, count)
    return jinja_filters.do_replace(eval_ctx, s, old, new, count)


@pass_eval_context
def _join(eval_ctx, value, d: str = "", attribute=None) -> str:
    items = list(value)
    if len(items) > 1 and len(str(d)) * (len(items) - 1) > MAX_VALUE:
        raise _Refused(TOO_BIG)
    return jinja_filters.sync_do_join(eval_ctx, items, d, attribute)


def _sum(iterable, attribute=None, start=0):
    items = list(iterable)
    if attribute is not None or not all(isinstance(x, (int, float)) for x in [*items, start]):
        raise _Refused("sum() in a template adds numbers only.")
    return sum(items, start)


# String methods a template may call; the others can pad, encode or format without bound.
STR_METHODS = frozenset({
    "capitalize", "casefold", "count", "endswith", "find", "index", "isalnum", "isalpha", "isdigit",
    "islower", "isnumeric", "isspace", "istitle", "isupper", "lower", "lstrip", "partition",
    "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rpartition", "rsplit", "rstrip",
    "split", "splitlines", "startswith", "strip", "swapcase", "title", "upper",
})


class _Bounded(NodeTransformer):
    """Rewrites a parsed template so loops and ``~`` go through the bounded helpers."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        node = self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "_loop", [], [], None, None, lineno=node.iter.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        node = self.generic_visit(node)
        return nodes.Filter(nodes.List(node.nodes, lineno=node.lineno), "_concat", [], [], None, None,
                            lineno=node.lineno)


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with bounds on time, steps, sizes and arithmetic."""

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def __init__(self, **options) -> None:
        super().__init__(finalize=_finalize, **options)
        # No lipsum(): it writes as many paragraphs as asked. range() is bounded.
        self.globals = {"range": _range, "dict": dict, "namespace": _Namespace, "cycler": Cycler,
                        "joiner": Joiner}
        self.filters = {name: _guarded(f) for name, f in self.filters.items() if name != "format"}
        for name, func in (("center", _center), ("indent", _indent), ("wordwrap", _wordwrap), ("batch", _batch),
                           ("slice", _slice), ("replace", _replace), ("join", _join), ("sum", _sum)):
            self.filters[name] = _guarded(func)
        self.filters["_loop"] = _loop
        self.filters["_concat"] = _concat

    def _parse(self, source, name, filename):
        """Parse, then route loops and ``~`` through the bounded helpers."""
        tree = _Bounded().visit(super()._parse(source, name, filename))
        tree.set_environment(self)
        return tree

    def is_safe_attribute(self, obj, attr, value) -> bool:
        """The immutable sandbox's rule, plus: only STR_METHODS on text, nothing on numbers."""
        if not super().is_safe_attribute(obj, attr, value):
            return False
        if isinstance(obj, str):
            return attr in STR_METHODS
        return not isinstance(obj, (int, float))  # int.to_bytes(10**9) and friends

    def wrap_str_format(self, value):
        """No str.format: see is_safe_attribute."""
        return None  # str.format is not in STR_METHODS: a width in it could pad without bound

    def call_binop(self, context, operator, left, right):
        """An arithmetic operator, refused when its result would be too big to keep."""
        _tick()
        if operator == "**":
            _check_power(left, right)
        elif operator == "*":
            _check_product(left, right)
        elif operator == "+":
            _check_sum(left, right)
        elif operator == "%" and isinstance(left, str):
            raise _Refused("Formatting text with % is not available in templates: put {{ variables }} "
                           "where they should go.")
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj, attribute):
        """``obj.attribute``, counted as a step."""
        _tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj, argument):
        """``obj[argument]``, counted as a step."""
        _tick()
        return super().getitem(obj, argument)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (Jinja's own signature)
        """A call (macro, method, global), counted as a step, its arguments and result bounded."""
        _tick()
        if any(_too_big(a) for a in args) or any(_too_big(v) for v in kwargs.values()):
            raise _Refused(TOO_BIG)
        if isinstance(__obj, types.BuiltinMethodType) and isinstance(__obj.__self__, str) \
                and __obj.__name__ == "replace":
            _check_replace(__obj.__self__, *args, **kwargs)
        return _check(super().call(__context, __obj, *args, **kwargs))


_env = BoundedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


@lru_cache(maxsize=512)
def _compile(source: str, field: str):
    """Parse and check a template once per distinct source (the result is reusable)."""
    try:
        unknown = sorted(meta.find_undeclared_variables(_env.parse(source)) - TOP_LEVEL)
        if not unknown:
            return _env.from_string(source)
    except TemplateSyntaxError as err:  # also an unknown filter, found while compiling
        raise TemplateProblem(f"Line {err.lineno}: {err.message}", field) from None
    raise TemplateProblem(f"Unknown variable “{unknown[0]}”. Use one of: " + ", ".join(VARIABLES), field)


def render_text(source: str, context: Context, field: str = "body", limit: int = MAX_EMAIL_BODY) -> str:
    """Render one template string within the bounds; raise TemplateProblem with a message for the editor."""
    template = _compile(source or "", field)
    token = _budget.set(_Budget(deadline=time.monotonic() + RENDER_SECONDS))
    try:
        out = _generate(template, context.as_dict(), field, limit)
    except _TimedOut as err:
        raise RenderTimeout(err.message, field) from None
    except _Refused as err:
        raise TemplateProblem(err.message, field) from None
    except UndefinedError as err:
        raise TemplateProblem(f"{_undefined_message(err)} Use one of: " + ", ".join(VARIABLES), field) from None
    except SecurityError:
        raise TemplateProblem("This template tries to reach something templates may not use.", field) from None
    except RecursionError:
        raise TemplateProblem("This template calls itself too deeply.", field) from None
    except TemplateProblem:
        raise
    except Exception as err:  # arithmetic on text, wrong filter arguments...
        raise TemplateProblem(f"This template cannot be rendered: {err}", field) from None
    finally:
        _budget.reset(token)
    if len(out) > limit:
        raise TooLong(f"Too long: {len(out)} characters once filled in; the limit is {limit}.", field, len(out))
    return out


def _generate(template, variables: dict, field: str, limit: int) -> str:
    """The output, read piece by piece and abandoned once it is far over ``limit``."""
    cutoff = 2 * limit + 1000  # room for the whitespace that strip() removes
    parts, size = [], 0
    stream = template.generate(variables)
    try:
        for part in stream:
            size += len(part)
            if size > cutoff:
                raise TooLong(f"Too long: more than {cutoff:,} characters once filled in; the limit is {limit}.",
                              field, None)
            parts.append(part)
    finally:
        stream.close()
    return "".join(parts).strip()


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary, with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:  # a word boundary not too far back; else cut inside the long word
        cut = cut[:space]
    return cut.rstrip(" ,;:-–—") + "…"


def render_subject(source: str, context: Context) -> str:
    """Render an e-mail subject: one line, shortened to MAX_SUBJECT (its length is never an error)."""
    return shorten(one_line(render_text(source, context, "subject", MAX_EMAIL_BODY)), MAX_SUBJECT)


def length_warnings(channel: str, subject: str | None, body: str, longest: Context) -> dict[str, str]:
    """Per field, a warning when the longest values allowed make the message too long.

    ``longest`` is :func:`longest_context`. A subject is then shortened; a body fails to send.
    Problems of another kind are not warnings: rendering for the sample candidate reports them.
    """
    warnings = {}
    if channel == "email" and (subject or "").strip():
        try:
            length = len(one_line(render_text(subject, longest, "subject", MAX_EMAIL_BODY)))
        except TooLong:
            length = MAX_EMAIL_BODY + 1
        except TemplateProblem:
            length = 0
        if length > MAX_SUBJECT:
            warnings["subject"] = (
                f"With the longest names and titles allowed (a {LONGEST_TITLE}-character role title, for one) "
                f"this subject reaches {length:,} characters: it is then shortened to {MAX_SUBJECT} with “…”.")
    limit = MAX_EMAIL_BODY if channel == "email" else MAX_SMS_BODY
    if (body or "").strip():
        try:
            render_text(body, longest, "body", limit)
        except TooLong as err:
            reach = f"reaches {err.length:,} characters" if err.length else "gets far longer"
            warnings["body"] = (
                f"With the longest names and titles allowed (a {LONGEST_TITLE}-character role title, for one) "
                f"this message {reach}, over the limit of {limit:,}: such a message would fail to send.")
        except TemplateProblem:
            pass
    return warnings


def _undefined_message(err: UndefinedError) -> str:
    text = str(err)
    if "has no attribute" in text:
        attr = text.rsplit("attribute", 1)[-1].strip(" '\"")
        return f"Unknown variable part “{attr}”."
    return f"Unknown variable: {text}."


# --- SMS segments ------------------------------------------------------------------------

GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = set("^{}\\[~]|€\f")


@dataclass(frozen=True)
class SmsCount:
    """How an SMS body will be sent: encoding, length in units, and number of segments."""

    encoding: str
    units: int
    segments: int
    per_segment: int


def sms_count(text: str) -> SmsCount:
    """Count GSM-7 units (extension characters count double) or UCS-2 units (UTF-16)."""
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENDED for ch in text):
        units = sum(2 if ch in GSM7_EXTENDED else 1 for ch in text)
        single, multi, encoding = 160, 153, "GSM-7"
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, multi, encoding = 70, 67, "UCS-2"
    if units <= single:
        return SmsCount(encoding, units, 1 if units else 0, single)
    return SmsCount(encoding, units, -(-units // multi), multi)
