"""Templates (versions, A/B variants), the one render function, and sending one message."""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from flask import current_app, render_template
from markupsafe import Markup, escape
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import DomainError
from ..extensions import db
from ..headers import one_line
from ..transactions import assert_no_transaction, end_transaction
from ..models import Candidate, Message, Settings, Template, TemplateVersion, User
from . import channels, defaults
from .templating import (MAX_EMAIL_BODY, MAX_SMS_BODY, Context, RenderTimeout, TemplateProblem, length_warnings,
                         longest_context, make_context, render_subject, render_text)

log = logging.getLogger(__name__)

MAX_VARIANTS = 4


# --- templates ----------------------------------------------------------------------------

def ensure_default_templates(session: Session) -> None:
    """Create the shipped template (variant A, version 1) for every kind and channel missing one."""
    have = set(session.execute(select(Template.kind, Template.channel)).all())
    for kind in defaults.KINDS:
        for channel in defaults.CHANNELS:
            if (kind, channel) in have:
                continue
            subject, body = defaults.default_content(kind, channel)
            try:
                with session.begin_nested():
                    template = Template(kind=kind, channel=channel, variant="A", weight=1, active=True)
                    template.versions.append(TemplateVersion(number=1, subject=subject, body=body))
                    session.add(template)
            except IntegrityError:
                pass  # another process made it a moment ago: theirs is as good


def current_version(session: Session, template: Template) -> TemplateVersion:
    """The newest version of a template variant."""
    return session.scalar(select(TemplateVersion).where(TemplateVersion.template_id == template.id)
                          .order_by(TemplateVersion.number.desc()).limit(1))


def variants(session: Session, kind: str, channel: str) -> list[Template]:
    """Every variant of one kind and channel, A first."""
    return list(session.scalars(select(Template).where(Template.kind == kind, Template.channel == channel)
                                .order_by(Template.variant)))


def choose_version(session: Session, kind: str, channel: str, rng: random.Random | None = None,
                   cache: dict | None = None) -> TemplateVersion:
    """Pick the template version for a message: an active variant drawn by weight.

    ``cache`` (one dispatch pass) keeps the variants and their current versions, so a batch
    of thousands does not ask for them thousands of times.
    """
    key = (defaults.TEMPLATE_KIND_FOR.get(kind, kind), channel)
    options = cache.get(key) if cache is not None else None
    if options is None:
        ensure_default_templates(session)
        found = variants(session, *key)
        active = [t for t in found if t.active and t.weight > 0] or found[:1]
        options = [(t.weight, current_version(session, t)) for t in active]
        if cache is not None:
            cache[key] = options
    return (rng or random).choices([v for _, v in options], weights=[max(w, 1) for w, _ in options])[0]


def validate_content(channel: str, subject: str | None, body: str, context: Context) -> None:
    """Render with a sample candidate; raise TemplateProblem naming the bad field."""
    if channel == "email":
        if not (subject or "").strip():
            raise TemplateProblem("An e-mail needs a subject.", "subject")
        # Its length is no error (a long subject is shortened when sent; the editor warns).
        if "\n" in render_text(subject, context, "subject", MAX_EMAIL_BODY):
            raise TemplateProblem("A subject is one line.", "subject")
    if not (body or "").strip():
        raise TemplateProblem("Write the message first.", "body")
    render_text(body, context, "body", MAX_EMAIL_BODY if channel == "email" else MAX_SMS_BODY)


def save_version(session: Session, template: Template, subject: str | None, body: str, user: User | None,
                 context: Context) -> TemplateVersion:
    """Save new content as the next version, after it renders cleanly for a sample candidate."""
    subject = subject.strip() if subject is not None and template.channel == "email" else None
    validate_content(template.channel, subject, body, context)
    latest = current_version(session, template)
    if latest and latest.subject == subject and latest.body == body.strip():
        return latest
    number = (session.scalar(select(func.max(TemplateVersion.number))
                             .where(TemplateVersion.template_id == template.id)) or 0) + 1
    version = TemplateVersion(template_id=template.id, number=number, subject=subject, body=body.strip(),
                              created_by_id=user.id if user else None)
    session.add(version)
    session.flush()
    return version


def restore_version(session: Session, template: Template, version: TemplateVersion, user: User | None,
                    context: Context) -> TemplateVersion:
    """Make an old version current again (as a new version, so history stays linear)."""
    return save_version(session, template, version.subject, version.body, user, context)


def add_variant(session: Session, kind: str, channel: str) -> Template:
    """Add the next A/B variant, starting from a copy of variant A's current content."""
    existing = variants(session, kind, channel)
    if not existing:
        raise DomainError("Unknown template.")
    if len(existing) >= MAX_VARIANTS:
        raise DomainError(f"At most {MAX_VARIANTS} variants per message.")
    label = chr(ord(max(t.variant for t in existing)) + 1)
    source = current_version(session, existing[0])
    template = Template(kind=kind, channel=channel, variant=label, weight=1, active=True)
    template.versions.append(TemplateVersion(number=1, subject=source.subject, body=source.body))
    session.add(template)
    session.flush()
    return template


def set_variant_options(session: Session, template: Template, weight: int, active: bool) -> None:
    """Change a variant's weight and whether it is in use; one variant always stays active."""
    if not 0 <= weight <= 100:
        raise DomainError("Use a weight from 0 to 100.")
    others_active = any(t.active and t.weight > 0 for t in variants(session, template.kind, template.channel)
                        if t.id != template.id)
    if (not active or weight == 0) and not others_active:
        raise DomainError("At least one variant must stay active with a weight above 0.")
    template.weight = weight
    template.active = active


# --- rendering ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Rendered:
    """A message ready for its channel."""

    subject: str | None
    text: str
    html: str | None


def public_url(path: str) -> str:
    """An absolute link under MILO_PUBLIC_BASE_URL (never the request's Host)."""
    return f"{current_app.config['MILO_PUBLIC_BASE_URL']}{path}"


def support_contact(settings: Settings, fallback: User | None) -> str:
    """The contact candidates are told to use for help."""
    parts = [p for p in (settings.support_email, settings.support_phone) if p]
    if parts:
        return " or ".join(parts)
    if fallback is not None:
        return f"{fallback.name} ({fallback.email})"
    return "the person who invited you"


def context_fields(candidate: Candidate, settings: Settings) -> dict:
    """What make_context needs for a real candidate, as plain values."""
    agent = candidate.agent
    owner = agent.owner
    return dict(
        name=candidate.name, role=agent.title, company=agent.company or settings.company_name,
        recruiter_name=(owner.name if owner else settings.sender_name) or agent.company,
        link=public_url(f"/i/{candidate.token}"), deadline_at=candidate.deadline_at, tz_name=candidate.timezone,
        duration_minutes=agent.duration_minutes, support_contact=support_contact(settings, owner),
    )


def context_for(candidate: Candidate, settings: Settings) -> Context:
    """The template context for a real candidate."""
    return make_context(**context_fields(candidate, settings))


def sample_context(settings: Settings, user: User | None, now: datetime) -> Context:
    """A believable candidate for previews and test sends."""
    return make_context(
        name="Alex Morgan", role="Customer support specialist", company=settings.company_name or "Acme",
        recruiter_name=user.name if user else (settings.sender_name or "Your recruiter"),
        link=public_url("/i/sample-link-for-preview"), deadline_at=now + timedelta(days=5),
        tz_name=user.timezone if user else settings.default_timezone, duration_minutes=15,
        support_contact=support_contact(settings, user),
    )


def email_html(text: str, link: str, subject: str, unsubscribe_url: str | None, pixel_url: str | None) -> str:
    """Wrap a plain-text body in the one e-mail layout (the link as a big button too)."""
    paragraphs = []
    for block in text.split("\n\n"):
        html = escape(block.strip())
        html = Markup(str(html).replace(str(escape(link)), f'<a href="{escape(link)}">{escape(link)}</a>'))
        paragraphs.append(Markup("<br>").join(Markup(line) for line in str(html).split("\n")))
    return render_template("email/layout.html", paragraphs=paragraphs, link=link, subject=subject,
                           unsubscribe_url=unsubscribe_url, pixel_url=pixel_url)


def render(version: TemplateVersion, channel: str, context: Context, *, unsubscribe_url: str | None = None,
           pixel_url: str | None = None) -> Rendered:
    """The one render function, used by previews, test sends and real sends alike."""
    return render_content(version.subject, version.body, channel, context, unsubscribe_url=unsubscribe_url,
                          pixel_url=pixel_url)


def render_content(subject: str | None, body: str, channel: str, context: Context, *,
                   unsubscribe_url: str | None = None, pixel_url: str | None = None) -> Rendered:
    """Render a subject and body for a channel (no database): see :func:`render`."""
    if channel == "email":
        subject = render_subject(subject or "", context)
        text = render_text(body, context, "body", MAX_EMAIL_BODY)
        text_with_footer = text
        if unsubscribe_url:
            text_with_footer += f"\n\n--\nNo more e-mails about this interview: {unsubscribe_url}"
        html = email_html(text, context.link, subject, unsubscribe_url, pixel_url)
        return Rendered(subject, text_with_footer, html)
    return Rendered(None, render_text(body, context, "body", MAX_SMS_BODY), None)


def longest_link() -> str:
    """A candidate link as long as a real one."""
    return public_url(f"/i/{'W' * 32}")  # tokens are 32 characters (192 bits, URL-safe base64)


def warnings_for(channel: str, subject: str | None, body: str) -> dict[str, str]:
    """The editor's length warnings for a draft: see templating.length_warnings."""
    return length_warnings(channel, subject, body, longest_context(longest_link()))


# --- sending ------------------------------------------------------------------------------

def _message_id_domain() -> str:
    return current_app.config.get("MILO_MESSAGE_ID_DOMAIN") or urlsplit(
        current_app.config["MILO_PUBLIC_BASE_URL"]).hostname or "localhost"


def sender_identity(settings: Settings) -> tuple[str, str] | str | None:
    """The From of our e-mails: the team's sender name and address."""
    address = settings.sender_email or current_app.config.get("MAIL_DEFAULT_SENDER")
    if not address:
        return None
    name = one_line(settings.sender_name)  # stored before names were cleaned, it may hold a line break
    return (name, address) if name else address


def list_unsubscribe(candidate: Candidate) -> tuple[str, str]:
    """(https URL, full List-Unsubscribe header value) for a candidate."""
    url = public_url(f"/u/{candidate.token}")
    header = f"<{url}>"
    mailto = current_app.config.get("MILO_UNSUBSCRIBE_MAILTO")
    if mailto:
        header += f", <mailto:{mailto}?subject=unsubscribe%20{candidate.id}>"
    return url, header


@dataclass(frozen=True)
class Draft:
    """What rendering and building one message needs, read from the database as plain values.

    The dispatcher reads drafts in a short transaction and renders them after it ends:
    rendering is bounded but may take up to its time limit, and no lock may be held meanwhile.
    """

    channel: str
    version_id: int | None
    subject_source: str | None
    body_source: str
    context_fields: dict
    to: str | None = None
    sender: tuple[str, str] | str | None = None
    reply_to: str | None = None
    unsubscribe_url: str | None = None
    list_unsubscribe: str | None = None
    pixel_url: str | None = None
    problem: channels.SendResult | None = None


@dataclass(frozen=True)
class Delivery:
    """Everything the network part of a send needs, as plain values (no database objects).

    ``subject`` and ``text`` are what is kept on the message; ``built`` is the e-mail as it
    goes on the wire.
    """

    channel: str
    email: channels.Email | None = None
    to: str | None = None
    text: str | None = None
    status_callback: str | None = None
    problem: channels.SendResult | None = None
    subject: str | None = None
    built: channels.BuiltEmail | None = None


def draft(session: Session, message: Message, settings: Settings, cache: dict | None = None) -> Draft:
    """Choose the variant (first time only) and read what sending this message needs."""
    candidate = message.candidate
    version = session.get(TemplateVersion, message.template_version_id) if message.template_version_id else None
    if version is None:
        version = choose_version(session, message.kind, message.channel, cache=cache)
        message.template_version_id = version.id
        message.variant = version.template.variant
    common = dict(channel=message.channel, version_id=version.id, subject_source=version.subject,
                  body_source=version.body, context_fields=context_fields(candidate, settings))
    if message.channel != "email":
        problem = None if candidate.phone else channels.SendResult(channels.PERMANENT, error="No phone number")
        return Draft(**common, to=candidate.phone, problem=problem)
    unsubscribe_url, header = list_unsubscribe(candidate)
    pixel = public_url(f"/t/o/{candidate.token}/{message.id}.gif") if settings.open_tracking else None
    sender = sender_identity(settings)
    problem = None
    if not candidate.email:
        problem = channels.SendResult(channels.PERMANENT, error="No e-mail address")
    elif sender is None:
        problem = channels.SendResult(channels.TEMPORARY, error="No sender address: set it in Settings → Messaging")
    return Draft(**common, to=candidate.email, sender=sender, reply_to=settings.reply_to,
                 unsubscribe_url=unsubscribe_url, list_unsubscribe=header, pixel_url=pixel, problem=problem)


def build(draft: Draft, timed_out: set | None = None) -> Delivery:
    """Render and build a drafted message, touching no database. It never raises.

    Whatever goes wrong here concerns this message only (a template problem, a value no
    header can carry, any other error while rendering or building): it comes back as a
    permanent problem with a reason a recruiter can read, and the rest of a batch goes on.
    ``timed_out`` (one dispatch pass) holds the template versions that ran out of time, so
    the same template is not given its full time again for every message of a backlog.
    """
    if timed_out is not None and draft.version_id in timed_out:
        return Delivery(draft.channel, problem=channels.SendResult(
            channels.PERMANENT, error="Template problem: this template takes too long to fill in"))
    try:
        rendered = render_content(draft.subject_source, draft.body_source, draft.channel,
                                  make_context(**draft.context_fields), unsubscribe_url=draft.unsubscribe_url,
                                  pixel_url=draft.pixel_url)
    except TemplateProblem as err:
        if isinstance(err, RenderTimeout) and timed_out is not None:
            timed_out.add(draft.version_id)
        return Delivery(draft.channel, problem=channels.SendResult(channels.PERMANENT,
                                                                   error=f"Template problem: {err.message}"))
    except Exception as err:  # noqa: BLE001 - one message's failure, recorded with its reason
        log.exception("Message could not be rendered")
        return Delivery(draft.channel, problem=channels.SendResult(
            channels.PERMANENT, error=f"This message cannot be rendered: {type(err).__name__}: {err}"))
    record = dict(subject=rendered.subject, text=rendered.text)
    if draft.problem is not None:
        return Delivery(draft.channel, problem=draft.problem, **record)
    if draft.channel != "email":
        return Delivery(draft.channel, to=draft.to, status_callback=public_url("/hooks/twilio/status"), **record)
    email = channels.Email(to=draft.to, subject=rendered.subject, text=rendered.text, html=rendered.html,
                           sender=draft.sender, reply_to=draft.reply_to, message_id_domain=_message_id_domain(),
                           list_unsubscribe=draft.list_unsubscribe)
    try:
        built = channels.prepare_email(email)
    except channels.CannotBuild as err:
        return Delivery("email", problem=channels.SendResult(channels.PERMANENT, error=str(err)), **record)
    return Delivery("email", email=email, to=draft.to, built=built, **record)


def prepare_delivery(session: Session, message: Message, settings: Settings, cache: dict | None = None) -> Delivery:
    """Draft, render and build one message and keep its content on it (one message at a time)."""
    delivery = build(draft(session, message, settings, cache))
    if delivery.text is not None:
        message.subject, message.body = delivery.subject, delivery.text
    return delivery


def deliver(delivery: Delivery, smtp: channels.TimeoutConnection | None = None) -> channels.SendResult:
    """The network part of sending: it touches no database object, so no transaction is held."""
    assert_no_transaction(db.session, f"Sending by {delivery.channel}")
    if delivery.problem is not None:
        return delivery.problem
    if delivery.channel == "email":
        if delivery.built is not None:
            return channels.send_built(delivery.built, smtp)
        return channels.send_email(delivery.email, smtp)
    return channels.send_text(delivery.channel, delivery.to, delivery.text, delivery.status_callback)


def send_message(session: Session, message: Message, settings: Settings,
                 smtp: channels.TimeoutConnection | None = None) -> channels.SendResult:
    """Send one claimed outbox message through its channel; return sent/temporary/permanent/unknown.

    It does not decide timing and does not change the message's status: the dispatcher does.
    """
    delivery = prepare_delivery(session, message, settings)
    end_transaction(session)  # what it rendered is kept; nothing is locked while the server answers
    return deliver(delivery, smtp)


def send_test(session: Session, channel: str, version: TemplateVersion, settings: Settings, user: User, to: str,
              now: datetime) -> channels.SendResult:
    """Send a template rendered for the sample candidate to the recruiter themselves.

    A diagnostic the recruiter waits for, so it runs now (bounded by the send deadline)
    rather than through the outbox; it goes to the recruiter, never to a candidate. It
    renders first, then ends the request's transaction: nothing is locked while the server
    answers (or does not).
    """
    try:
        rendered = render(version, channel, sample_context(settings, user, now),
                          unsubscribe_url=public_url("/u/sample") if channel == "email" else None)
    except TemplateProblem as err:
        return channels.SendResult(channels.PERMANENT, error=f"Template problem: {err.message}")
    if channel == "email":
        sender = sender_identity(settings)
        if sender is None:
            return channels.SendResult(channels.PERMANENT, error="No sender address: set it in Settings → Messaging")
        delivery = Delivery("email", email=channels.Email(
            to=to, subject=f"[Test] {rendered.subject}", text=rendered.text, html=rendered.html, sender=sender,
            reply_to=settings.reply_to, message_id_domain=_message_id_domain()))
    else:
        delivery = Delivery(channel, to=to, text=rendered.text)
    end_transaction(session)
    return deliver(delivery)


def last_error(session: Session, channel: str) -> Message | None:
    """The most recent failed message on a channel (its error is the channel's last error)."""
    return session.scalar(select(Message).where(Message.channel == channel, Message.last_error.is_not(None),
                                                Message.status.in_(("failed", "scheduled")))
                          .order_by(Message.id.desc()).limit(1))
