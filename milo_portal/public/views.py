"""Candidate pages. A wrong, rotated or erased token is a plain 404 that reveals nothing."""
from __future__ import annotations

from pathlib import Path

from flask import abort, current_app, g, redirect, render_template, request, url_for

from .. import ratelimit
from ..candidates import services as candidates
from ..candidates import stages
from ..clock import now
from ..errors import DomainError
from ..extensions import csrf, db
from ..models import Candidate, Event, Message, Stage
from ..settings.services import get_settings
from ..transactions import end_transaction, reads_only, write_unit
from . import bp, services
from .services import State


def get_public_candidate(token: str) -> Candidate:
    """The candidate behind a link token, or 404 with no hint."""
    candidate, g.help_line = services.find_with_help(db.session, token)
    if candidate is None:
        abort(404)
    return candidate


def get_public_view(token: str) -> services.CandidateView:
    """The candidate behind a link token as a read-only view (pages that only show), or 404."""
    view, g.help_line = services.view_with_help(db.session, token)
    if view is None:
        abort(404)
    return view


def _reload(candidate) -> Candidate:
    """The candidate as an ORM object inside the current write unit (404 if gone meanwhile)."""
    try:
        return services.reload(db.session, candidate)
    except LookupError:
        abort(404)


def _help() -> dict:
    """The help line under every candidate page (read with the candidate when there is one)."""
    line = g.get("help_line") or get_settings(db.session)
    return {"support_email": line.support_email, "support_phone": line.support_phone,
            "company_name": line.company_name}


def _page(template: str, candidate: Candidate | None = None, status: int = 200, **ctx):
    agent = ctx.pop("agent", None) or (candidate.agent if candidate else None)
    return render_template(f"public/{template}", c=candidate, agent=agent, help=_help(), **ctx), status


def _gate(candidate):
    """Render the page for a link that cannot show questions, or None to go on."""
    instant = now()
    state = services.state_of(candidate, instant)
    if state == State.EXPIRED and candidate.stage != Stage.EXPIRED:
        with write_unit(db.session):
            services.expire_if_due(db.session, _reload(candidate), instant)
    if state == State.DONE:
        return redirect(url_for("public.done", token=candidate.token))
    if state == State.EXPIRED:
        return _page("expired.html", candidate)
    if state == State.CLOSED:
        return _page("closed.html", candidate)
    if state == State.OPTED_OUT:
        return _page("opted_out.html", candidate)
    return None


@bp.get("/i/<token>")
def landing(token: str):
    candidate = get_public_view(token)
    gate = _gate(candidate)
    if gate is not None:
        return gate
    if candidate.stage == Stage.STARTED:
        return _continue(candidate)
    instant = now()
    if services.visit_would_record(candidate, instant):  # decided in Python: a repeat visit writes nothing
        services.visit(db.session, candidate, instant, request.user_agent.string)
    local_deadline = candidate.deadline_at
    return _page("landing.html", candidate, errors={}, name=candidate.name or "", email=candidate.email or "",
                 deadline=local_deadline)


@csrf.exempt
@bp.post("/i/<token>/seen")
def seen(token: str):
    """The landing page's beacon: a person is using the page, so the link was clicked.

    Exempt from CSRF: it carries the unguessable link token, and all it can do is record
    the click that opening the page in a browser records anyway.
    """
    candidate = get_public_candidate(token)
    if stages.can_move(candidate.stage, Stage.CLICKED):
        with write_unit(db.session):
            services.click(db.session, candidate, now(), request.user_agent.string, via="used the page")
    return "", 204


# The candidate's forms (start, answer, submit, and the share page's sign-up) carry no CSRF
# token: no cookie or session is involved, so a forged post from another site could do
# nothing that posting from anywhere does not already allow (the unguessable link token in
# the URL is the only credential; the share sign-up is rate-limited per link, address and
# e-mail). Without the token the candidate pages set no cookie at all, so a candidate who
# blocks cookies is never told their form "expired".

# The POSTs below commit with end_transaction: the objects stay loaded, so choosing the next
# page after the write reads nothing again (a plain commit would expire them, and reloading
# them in a POST would begin a second write unit just to read).
def _continue(candidate, questions: list[services.QuestionView] | None = None):
    if candidate.agent.external_url:
        return _page("external.html", candidate, external_url=services.external_url(candidate))
    if isinstance(candidate, Candidate):
        number = services.first_unanswered(candidate)
    else:
        number = services.first_unanswered_of(questions or services.questions_of(db.session, candidate))
    if number is None:
        return redirect(url_for("public.review", token=candidate.token))
    return redirect(url_for("public.question", token=candidate.token, number=number))


@csrf.exempt
@bp.post("/i/<token>/start")
def start(token: str):
    candidate = get_public_candidate(token)
    gate = _gate(candidate)
    if gate is not None:
        return gate
    if candidate.stage != Stage.STARTED:
        try:
            services.start(db.session, candidate, request.form.get("name", ""), request.form.get("email", ""),
                           now(), request.user_agent.string)
        except candidates.ContactErrors as err:
            db.session.rollback()
            return _page("landing.html", candidate, status=422, errors=err.errors,
                         name=request.form.get("name", ""), email=request.form.get("email", ""),
                         deadline=candidate.deadline_at)
        end_transaction(db.session)
    if candidate.agent.external_url:
        return redirect(url_for("public.landing", token=candidate.token))
    return _continue(candidate)


def _started(candidate):
    gate = _gate(candidate)
    if gate is not None:
        return gate
    if candidate.stage != Stage.STARTED or candidate.agent.external_url:
        return redirect(url_for("public.landing", token=candidate.token))
    return None


@bp.get("/i/<token>/q/<int:number>")
def question(token: str, number: int):
    candidate = get_public_view(token)
    stop = _started(candidate)
    if stop is not None:
        return stop
    questions = services.questions_of(db.session, candidate)
    if not 1 <= number <= len(questions):
        return _continue(candidate, questions)
    shown = questions[number - 1]
    return _page("question.html", candidate, number=number, total=len(questions), question=shown,
                 answer=shown.body or "", error=None)


@csrf.exempt
@bp.post("/i/<token>/q/<int:number>")
@reads_only  # the reads stay deferred; the save is one short write unit (services.save_answer)
def save_answer(token: str, number: int):
    candidate = get_public_view(token)
    stop = _started(candidate)
    if stop is not None:
        return stop
    questions = services.questions_of(db.session, candidate)
    body = request.form.get("answer", "")
    try:
        services.save_answer(db.session, candidate, questions, number, body, now())
    except services.NotStarted:
        return redirect(url_for("public.landing", token=candidate.token))
    except DomainError as err:
        db.session.rollback()
        if not 1 <= number <= len(questions):
            abort(404)
        return _page("question.html", candidate, status=422, number=number, total=len(questions),
                     question=questions[number - 1], answer=body, error=err.message)
    if request.form.get("then") == "review":
        return redirect(url_for("public.review", token=candidate.token))
    answered = questions[number - 1]
    questions[number - 1] = services.QuestionView(answered.id, answered.text, True, body)
    return _continue(candidate, questions)


@bp.get("/i/<token>/review")
def review(token: str):
    candidate = get_public_candidate(token)
    stop = _started(candidate)
    if stop is not None:
        return stop
    missing = services.first_unanswered(candidate)
    if missing is not None:
        return redirect(url_for("public.question", token=candidate.token, number=missing))
    return _page("review.html", candidate, error=None)


@csrf.exempt
@bp.post("/i/<token>/submit")
def submit(token: str):
    candidate = get_public_candidate(token)
    stop = _started(candidate)
    if stop is not None:
        return stop
    try:
        services.complete(db.session, candidate, now())
    except DomainError as err:
        db.session.rollback()
        return _page("review.html", candidate, status=422, error=err.message)
    end_transaction(db.session)
    return redirect(url_for("public.done", token=candidate.token))


@bp.get("/i/<token>/done")
def done(token: str):
    candidate = get_public_candidate(token)
    if candidate.stage != Stage.COMPLETED:
        return redirect(url_for("public.landing", token=candidate.token))
    return _page("done.html", candidate)


# --- the share link ---------------------------------------------------------------------

@csrf.exempt  # no cookie or session is involved: see the note above the candidate's forms
@bp.route("/s/<share_token>", methods=["GET", "POST"])
def share(share_token: str):
    agent = services.find_agent_by_share_token(db.session, share_token)
    if agent is None or not agent.share_open:
        # Unknown, rotated, turned off or archived: the same polite page, nothing revealed.
        return _page("closed.html", status=404)
    src = request.values.get("src", "")
    form = {"name": request.form.get("name", ""), "email": request.form.get("email", ""),
            "phone": request.form.get("phone", "")}
    if request.method == "GET":
        return _page("share.html", agent=agent, src=src, form=form, errors={})
    settings = get_settings(db.session)
    instant = now()
    limits = services.share_limits(agent, request.remote_addr or "unknown", form["email"])
    wait = ratelimit.retry_after(db.session, limits, instant)
    if wait is not None:
        minutes = ratelimit.minutes(wait)
        error = (f"Too many sign-ups from here just now. Please try again in {minutes} "
                 f"minute{'s' if minutes != 1 else ''}.")
        return _page("share.html", agent=agent, src=src, form=form, errors={"form": error}, status=429)
    try:
        outcome = services.join_via_share(
            db.session, agent, form["name"], form["email"], form["phone"], src, instant,
            request.user_agent.string, settings.default_country, settings.default_timezone)
    except candidates.ContactErrors as err:
        db.session.rollback()
        ratelimit.hit(db.session, limits, instant)  # a script trying addresses counts as well
        db.session.commit()
        return _page("share.html", agent=agent, src=src, form=form, errors=err.errors, status=422)
    except DomainError:
        db.session.rollback()
        return _page("closed.html", status=404)
    ratelimit.hit(db.session, limits, instant)
    end_transaction(db.session)
    if not outcome.created:
        # The same words whether or not the address had signed up: nothing is revealed.
        return _page("share_sent.html", agent=agent, address=form["email"] or form["phone"])
    return _continue(outcome.candidate)


# --- opt-out and tracking -------------------------------------------------------------------

@bp.get("/u/<token>")
def unsubscribe(token: str):
    """Confirm before opting out: link scanners that fetch every URL must not unsubscribe anyone."""
    candidate = get_public_candidate(token)
    return _page("unsubscribe.html", candidate, done=candidate.opted_out_email)


@csrf.exempt
@bp.post("/u/<token>")
def unsubscribe_post(token: str):
    """Opt out of e-mail: the one-click POST of RFC 8058 (no cookie, no CSRF token) or our button."""
    candidate = get_public_candidate(token)
    candidates.set_opt_out(db.session, candidate, "email", True, now(), actor_id=None,
                           via="one-click" if request.form.get("List-Unsubscribe") == "One-Click" else "unsubscribe page")
    end_transaction(db.session)
    return _page("unsubscribe.html", candidate, done=True)


PIXEL = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
         b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")


@bp.get("/t/o/<token>/<int:message_id>.gif")
def open_pixel(token: str, message_id: int):
    """Record an (approximate) open of one of our e-mails, then answer with a 1×1 image."""
    candidate = services.find_by_token(db.session, token)
    if candidate is not None:
        message = db.session.get(Message, message_id)
        if message is not None and message.candidate_id == candidate.id:
            _record_open(candidate, message)
    return PIXEL, 200, {"Content-Type": "image/gif", "Cache-Control": "no-store"}


def _record_open(candidate: Candidate, message: Message) -> None:
    """A reader's open moves the candidate to "opened"; a machine's is recorded apart, once."""
    instant = now()
    if services.is_machine_open(request.user_agent.string, message.sent_at, instant):
        already = db.session.scalar(db.select(Event.id).where(
            Event.candidate_id == candidate.id, Event.message_id == message.id, Event.type == "machine_opened"))
        if already is None:
            with write_unit(db.session):
                stages.record(db.session, candidate, "machine_opened", instant, channel="email",
                              message_id=message.id, detail="open pixel fetched by a proxy or scanner")
    elif stages.can_move(candidate.stage, Stage.OPENED):
        with write_unit(db.session):
            stages.move(db.session, candidate, Stage.OPENED, instant, channel="email", message_id=message.id,
                        detail="open pixel (approximate)")


@bp.get("/favicon.ico")
def favicon():
    """Our own icon for browsers that ask for /favicon.ico (pages also link static/favicon.svg)."""
    icon = Path(current_app.static_folder, "favicon.svg").read_bytes()  # a few hundred bytes
    return current_app.response_class(icon, mimetype="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})
