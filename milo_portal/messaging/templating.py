"""Rendering user-editable templates safely, and counting SMS segments.

Templates are Jinja in a ``SandboxedEnvironment`` with ``StrictUndefined`` over a fixed set of
variables: a typo, an unknown variable or an attempt to reach Python internals is an error
shown to the editor, never a blank in a candidate's message.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime

from jinja2 import StrictUndefined, TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from ..formatting import format_local

MAX_SUBJECT = 200
MAX_EMAIL_BODY = 10_000
MAX_SMS_BODY = 1_600  # ten segments: anything longer is a letter, not a text

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
    """Build the template context for one candidate."""
    full = (name or "").strip() or "there"
    first = full.split()[0] if full != "there" else "there"
    deadline = format_local(deadline_at, tz_name, "%A %d %B, %H:%M") if deadline_at else "soon"
    return Context(
        candidate=CandidateVars(first_name=first, full_name=full), role=role, company=company,
        recruiter_name=recruiter_name, link=link, deadline=deadline,
        duration=f"{duration_minutes} minutes", support_contact=support_contact,
    )


_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


@lru_cache(maxsize=512)
def _compile(source: str, field: str):
    """Parse and check a template once per distinct source (the result is reusable)."""
    try:
        ast = _env.parse(source)
    except TemplateSyntaxError as err:
        raise TemplateProblem(f"Line {err.lineno}: {err.message}", field) from None
    unknown = sorted(meta.find_undeclared_variables(ast) - TOP_LEVEL)
    if unknown:
        raise TemplateProblem(
            f"Unknown variable “{unknown[0]}”. Use one of: " + ", ".join(VARIABLES), field)
    return _env.from_string(source)


def render_text(source: str, context: Context, field: str = "body", limit: int = MAX_EMAIL_BODY) -> str:
    """Render one template string; raise TemplateProblem with a message for the editor."""
    template = _compile(source or "", field)
    try:
        out = template.render(context.as_dict())
    except UndefinedError as err:
        raise TemplateProblem(f"{_undefined_message(err)} Use one of: " + ", ".join(VARIABLES), field) from None
    except SecurityError:
        raise TemplateProblem("This template tries to reach something templates may not use.", field) from None
    except Exception as err:  # arithmetic on text, wrong filter arguments...
        raise TemplateProblem(f"This template cannot be rendered: {err}", field) from None
    out = out.strip()
    if len(out) > limit:
        raise TemplateProblem(f"Too long: {len(out)} characters once filled in; the limit is {limit}.", field)
    return out


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
