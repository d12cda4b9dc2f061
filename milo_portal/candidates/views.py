"""Add Candidates, the candidates list, and the candidate page."""
from __future__ import annotations

import json

from datetime import date
from zoneinfo import ZoneInfo
from urllib.parse import parse_qsl, urlencode

from flask import (Response, abort, current_app, flash, redirect, render_template, request,
                   stream_with_context, url_for)
from flask_login import current_user
from sqlalchemy import select

from .. import audit
from ..agents.access import get_agent
from ..clock import now
from ..errors import DomainError
from ..extensions import db
from ..forms_common import choices
from ..models import CHANNELS, SOURCES, Agent, Candidate, Stage
from ..pagination import page_count
from ..request_input import PAGE_MAX, int_arg, int_list_arg
from ..settings.services import get_settings
from ..followups import services as followups
from ..transactions import reads_only, write_unit
from . import bp, services
from .forms import AddCandidateForm, BulkForm, ContactForm, DeadlineForm

# The Add Candidates menu's ways in, by the short name the earlier menu linked to: an old
# link or bookmark lands on the page that does it now.
ADD_METHODS = {"bulk": ("imports.new", "agent_id"), "api": ("integrations.index", "api"),
               "ats": ("integrations.index", "ats"), "indeed": ("integrations.index", "indeed")}


def get_candidate(candidate_id: int) -> Candidate:
    """The one place that turns a candidate id from a URL into a candidate, or 404."""
    candidate = db.session.get(Candidate, candidate_id)
    if candidate is None or candidate.erased_at is not None:
        abort(404)
    return candidate


def candidate_link(candidate: Candidate) -> str:
    """The candidate's unique public link."""
    return f"{current_app.config['MILO_PUBLIC_BASE_URL']}/i/{candidate.token}"


def _actor() -> int:
    return current_user.id


# --- Add Candidates -----------------------------------------------------------------------

def _agent_choices(form: AddCandidateForm) -> str:
    """Fill the interview choices; return each one's default channel as JSON, for the page's
    script to follow the chosen interview until the recruiter picks a channel themselves."""
    agents = db.session.scalars(select(Agent).where(Agent.archived_at.is_(None)).order_by(Agent.title)).all()
    form.agent_id.choices = choices((a.id, f"{a.title} — {a.company}") for a in agents)
    return json.dumps({str(a.id): a.default_channel for a in agents})


def _contact(form: ContactForm) -> services.ContactData:
    return services.ContactData(
        name=form.name.data or "", email=form.email.data or "", phone=form.phone.data or "",
        timezone=form.timezone.data or "", channel=form.channel.data or "email",
    )


def _apply_errors(form, err: services.ContactErrors) -> None:
    for name, message in err.errors.items():
        getattr(form, name).errors = list(getattr(form, name).errors) + [message]


@bp.get("/candidates/add/<method>")
def add_method(method: str):
    if method not in ADD_METHODS:
        abort(404)
    endpoint, focus = ADD_METHODS[method]
    if focus == "agent_id":
        return redirect(url_for(endpoint, agent_id=int_arg(request.args, "agent_id")))
    return redirect(url_for(endpoint, focus=focus))


@bp.route("/candidates/new", methods=["GET", "POST"])
def new():
    settings = get_settings(db.session)
    form = AddCandidateForm()
    channels = _agent_choices(form)
    if not form.agent_id.choices:
        flash("Create an interview agent first: candidates are invited to one.", "info")
        return redirect(url_for("agents.new"))
    if request.method == "GET":
        agent = db.session.get(Agent, int_arg(request.args, "agent_id", 0))
        agent = agent or db.session.get(Agent, int(form.agent_id.choices[0].value))
        form.agent_id.data = agent.id
        form.channel.data = agent.default_channel
        form.timezone.data = settings.default_timezone
        # No date pre-filled: a date shown here would belong to the interview first in the
        # list, and would no longer be counted from the invite once it was sent as given.
    elif form.validate_on_submit():
        agent = get_agent(form.agent_id.data)
        moment = now()
        try:
            contact = services.clean_contact(
                _contact(form), settings.default_country, settings.default_timezone)
            # No date is the interview's default: it is counted in the candidate's own zone,
            # and again from the moment their invite really goes.
            default = form.deadline.data is None
            day = services.default_deadline_date(agent, contact.timezone, moment) if default else form.deadline.data
            deadline_at = services.deadline_from_date(day, contact.timezone, moment)
            candidate, created = services.add_candidate(
                db.session, agent, contact, deadline_at, moment, source="manual",
                invite_now=form.invite_now.data, actor_id=_actor(), deadline_follows_invite=default)
        except services.ContactErrors as err:
            db.session.rollback()
            _apply_errors(form, err)
        except DomainError as err:
            db.session.rollback()
            form.form_errors.append(err.message)
        else:
            db.session.commit()
            if created:
                flash(f"{candidate.name} is added. Their unique link is below.", "success")
                return redirect(url_for("candidates.detail", candidate_id=candidate.id, added=1))
            flash(f"{candidate.name or candidate.email} was already added to this interview "
                  f"({candidate.stage.replace('_', ' ')}). Here is their page; nothing new was created.", "info")
            return redirect(url_for("candidates.detail", candidate_id=candidate.id))
    return render_template("candidates/new.html", form=form, agent_channels=channels), (
        422 if form.errors or form.form_errors else 200)


@bp.post("/candidates/new/validate")
@reads_only
def validate_field():
    """Check one field as the recruiter leaves it (HTMX); returns that field's fragment."""
    settings = get_settings(db.session)
    form = AddCandidateForm()
    _agent_choices(form)
    name = request.headers.get("HX-Trigger-Name") or request.args.get("field", "")
    if name not in ("name", "email", "phone", "channel", "deadline"):
        abort(400)
    fields = [name]
    try:
        services.clean_contact(_contact(form), settings.default_country, settings.default_timezone)
    except services.ContactErrors as err:
        if name in err.errors:
            _apply_errors(form, services.ContactErrors({name: err.errors[name]}))
    if name == "deadline" and form.deadline.data:
        try:
            services.deadline_from_date(form.deadline.data, form.timezone.data or settings.default_timezone, now())
        except services.ContactErrors as err:
            _apply_errors(form, err)
    # A phone number from one time zone fills the time zone in, unless chosen by hand.
    zone_from_phone = None
    if name == "phone" and not form.timezone_touched.data and form.phone.data:
        try:
            _, zone_from_phone = services.normalise_phone(form.phone.data, settings.default_country)
        except DomainError:
            zone_from_phone = None
        if zone_from_phone:
            form.timezone.data = zone_from_phone
            fields.append("timezone")
    return render_template("candidates/_fields.html", form=form, fields=fields, primary=name)


# --- list -----------------------------------------------------------------------------------

def _filters() -> services.ListFilters:
    args = request.values  # a bulk action posts the ids and keeps the filters in its URL
    sort = args.get("sort", "added")
    sort = sort if sort in services.SORTS else "added"
    desc = args.get("dir", "desc") != "asc"
    after = (args.get("after") or "")[:300] or None
    page = int_arg(args, "page", None, minimum=1, maximum=PAGE_MAX)
    day = args.get("from", "")
    if day and not after:
        # "Go to date": a cursor at that day's midnight; the page number is not known there.
        try:
            after = services.date_cursor(date.fromisoformat(day), current_user.timezone, sort, desc)
        except ValueError:
            after = None
        page = None
    return services.ListFilters(
        agent_id=int_arg(args, "agent_id"), stage=args.get("stage") or None,
        source=args.get("source") or None, channel=args.get("channel") or None,
        q=(args.get("q") or "")[:100], sort=sort, desc=desc,
        after=after, before=(args.get("before") or "")[:300] or None, last=args.get("last") == "1",
        page=page if page and page > 0 else None,
        ids=int_list_arg(args, "ids"),
        metric=(args.get("metric") or "")[:40] or None, metric_dim=(args.get("metric_dim") or "")[:20] or None,
        metric_value=(args.get("metric_value") or "")[:200] or None,
        metric_args={k: (args.get(k) or "")[:200] for k in METRIC_ARGS if args.get(k)},
    )


# A Metrics drill-down's own filters (agent, source and channel are the list's too).
METRIC_ARGS = ("since", "until", "src", "level", "agent_id", "source", "channel")


def _query_string(filters: services.ListFilters, position: bool = True, **over) -> str:
    """The list's URL query: its filters and sort, and (``position``) the page it is on."""
    values = {"agent_id": filters.agent_id or "", "stage": filters.stage or "", "source": filters.source or "",
              "channel": filters.channel or "", "q": filters.q, "sort": filters.sort,
              "dir": "desc" if filters.desc else "asc"}
    if filters.metric:
        values.update(filters.metric_args, metric=filters.metric, metric_dim=filters.metric_dim or "",
                      metric_value=filters.metric_value or "")
    if position:
        values.update(after=filters.after, before=filters.before, last="1" if filters.last else "",
                      page=filters.page)
    values.update(over)
    return urlencode({k: v for k, v in values.items() if v not in ("", None)})


def _page_number(filters: services.ListFilters, result: services.CandidatePage, pages: int | None) -> int | None:
    """Which page this is, when known: keyset pages carry their number in the URL."""
    if result.before is None:
        return 1
    if filters.last and pages:
        return pages
    return filters.page


@bp.get("/candidates")
def index():
    filters = _filters()
    if services.tally.fold_if_due(db.session):
        db.session.commit()
    result = services.list_candidates(db.session, filters)
    pages = page_count(result.total, services.PAGE_SIZE)
    agent = db.session.get(Agent, filters.agent_id) if filters.agent_id else None
    ctx = dict(rows=result.rows, total=result.total, result=result, filters=filters, agent=agent,
               pages=pages, page_number=_page_number(filters, result, pages),
               date_sort=filters.sort in services.DATE_SORTS,
               filter_fields=parse_qsl(_query_string(filters, position=False)),
               qs=lambda **over: _query_string(filters, **over), stages=Stage.ALL, sources=SOURCES,
               channels=CHANNELS, channel_labels=services.CHANNEL_LABELS, source_labels=services.SOURCE_LABELS,
               bulk_form=BulkForm(),
               agents=db.session.scalars(select(Agent).order_by(Agent.title)).all())
    if request.htmx and request.htmx.target == "candidate-results":
        return render_template("candidates/_results.html", **ctx)
    return render_template("candidates/index.html", **ctx)


@bp.route("/agents/<int:agent_id>/nudge-all", methods=["GET", "POST"])
def nudge_all(agent_id: int):
    """Nudge all who started but didn't finish: shows who first, acts on confirmation."""
    agent = get_agent(agent_id)
    people = services.nudgeable(db.session, agent.id, now())
    if request.method == "POST":
        done, skipped = services.nudge_all(db.session, agent.id, now(), _actor())
        db.session.commit()
        flash(f"{done} candidate{'s' if done != 1 else ''} will be nudged inside their send window.", "success")
        if skipped:
            flash(f"Not nudged ({len(skipped)}): " + "; ".join(skipped[:10]), "info")
        return redirect(url_for("agents.detail", agent_id=agent.id))
    return render_template("candidates/nudge_all.html", agent=agent, people=people)


@bp.get("/agents/<int:agent_id>/candidates")
def for_agent(agent_id: int):
    get_agent(agent_id)
    return redirect(url_for("candidates.index", agent_id=agent_id, **request.args))


@bp.get("/candidates/export.csv")
def export():
    filters = _filters()
    stamp = now().strftime("%Y%m%d-%H%M")
    with write_unit(db.session) as work:  # an export of personal data is on record before it streams
        audit.record(work, current_user, "candidate_export", audit.services.export_detail(filters), address=request.remote_addr)
    return Response(stream_with_context(services.export_csv(db.session, filters)), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="candidates-{stamp}.csv"'})


@bp.post("/candidates/bulk")
def bulk():
    form = BulkForm()
    filters = _filters()
    back = url_for("candidates.index") + "?" + _query_string(filters)
    if not form.validate_on_submit():
        flash("Choose an action and at least one candidate.", "error")
        return redirect(back)
    if not filters.ids:
        flash("Select at least one candidate first.", "error")
        return redirect(back)
    if form.action.data == "export":
        return redirect(url_for("candidates.export") + "?" + urlencode([("ids", i) for i in filters.ids]))
    picked = db.session.scalars(
        select(Candidate).where(Candidate.id.in_(filters.ids), Candidate.erased_at.is_(None))).all()
    done, skipped = services.bulk_apply(db.session, form.action.data, picked, now(), _actor(),
                                        extend_days=form.extend_days.data or 3)
    db.session.commit()
    verb = {"invite": "invited", "nudge": "nudged", "extend": "given more time"}[form.action.data]
    flash(f"{done} candidate{'s' if done != 1 else ''} {verb}.", "success")
    if skipped:
        flash(f"Skipped {len(skipped)}: " + "; ".join(skipped[:10]) + (" …" if len(skipped) > 10 else ""), "info")
    return redirect(back)


# --- candidate page -------------------------------------------------------------------------

def _detail(candidate: Candidate, edit_form: ContactForm | None = None, deadline_form: DeadlineForm | None = None,
            status: int = 200):
    if deadline_form is None:
        deadline_form = DeadlineForm(formdata=None)
        if candidate.deadline_at:
            deadline_form.deadline.data = candidate.deadline_at.astimezone(ZoneInfo(candidate.timezone)).date()
    return render_template(
        "candidates/detail.html", c=candidate, link=candidate_link(candidate),
        timeline=services.timeline(db.session, candidate),
        upcoming=followups.upcoming(db.session, candidate, now()),
        edit_form=edit_form or ContactForm(formdata=None, obj=candidate),
        deadline_form=deadline_form, channel_labels=services.CHANNEL_LABELS,
        source_labels=services.SOURCE_LABELS,
        just_added=request.args.get("added") == "1",
    ), status


@bp.get("/candidates/<int:candidate_id>")
def detail(candidate_id: int):
    return _detail(get_candidate(candidate_id))


def _action(candidate_id: int, fn, success: str):
    candidate = get_candidate(candidate_id)
    try:
        fn(candidate)
    except DomainError as err:
        db.session.rollback()
        flash(err.message, "error")
    else:
        db.session.commit()
        flash(success, "success")
    return redirect(url_for("candidates.detail", candidate_id=candidate_id))


@bp.post("/candidates/<int:candidate_id>/invite")
def resend_invite(candidate_id: int):
    return _action(candidate_id, lambda c: services.send_invite(db.session, c, now(), actor_id=_actor(),
                                                                rule="Resend invite, by a recruiter"),
                   "The invite is queued in the outbox.")


@bp.post("/candidates/<int:candidate_id>/send-now")
def send_now(candidate_id: int):
    """The invite at once, outside the window or on a Friday if need be (never past an opt-out)."""
    return _action(candidate_id, lambda c: services.send_invite(db.session, c, now(), actor_id=_actor(),
                                                                rule="Send now, by a recruiter", immediate=True),
                   "The invite goes out on the next tick, whatever the time is for them.")


@bp.post("/candidates/<int:candidate_id>/nudge")
def nudge(candidate_id: int):
    return _action(candidate_id, lambda c: services.nudge_now(db.session, c, now(), _actor()),
                   "The nudge is queued in the outbox.")


@bp.post("/candidates/<int:candidate_id>/complete")
def complete(candidate_id: int):
    return _action(candidate_id, lambda c: services.mark_completed(db.session, c, now(), _actor()),
                   "Marked completed.")


@bp.post("/candidates/<int:candidate_id>/opt-out")
def opt_out(candidate_id: int):
    channel = request.form.get("channel", "")
    out = request.form.get("out") == "1"

    def run(c):
        n = services.set_opt_out(db.session, c, channel, out, now(), _actor())
        if n:
            flash(f"{n} queued message{'s' if n != 1 else ''} cancelled.", "info")

    label = services.CHANNEL_LABELS.get(channel, channel)
    return _action(candidate_id, run, f"Opted out of {label}." if out else f"{label} messages allowed again.")


@bp.post("/candidates/<int:candidate_id>/deadline")
def deadline(candidate_id: int):
    candidate = get_candidate(candidate_id)
    form = DeadlineForm()
    if form.validate_on_submit():
        try:
            when = services.deadline_from_date(form.deadline.data, candidate.timezone, now())
            services.extend_deadline(db.session, candidate, when, now(), _actor())
        except services.ContactErrors as err:
            db.session.rollback()
            _apply_errors(form, err)
        except DomainError as err:
            db.session.rollback()
            form.deadline.errors = list(form.deadline.errors) + [err.message]
        else:
            db.session.commit()
            flash("Deadline changed.", "success")
            return redirect(url_for("candidates.detail", candidate_id=candidate.id))
    return _detail(candidate, deadline_form=form, status=422)


@bp.post("/candidates/<int:candidate_id>/edit")
def edit(candidate_id: int):
    candidate = get_candidate(candidate_id)
    settings = get_settings(db.session)
    form = ContactForm()
    if form.validate_on_submit():
        try:
            contact = services.clean_contact(_contact(form), settings.default_country, settings.default_timezone)
            services.update_contact(db.session, candidate, contact, now())
        except services.ContactErrors as err:
            db.session.rollback()
            _apply_errors(form, err)
        else:
            db.session.commit()
            flash("Contact details saved.", "success")
            return redirect(url_for("candidates.detail", candidate_id=candidate.id))
    return _detail(candidate, edit_form=form, status=422)


@bp.post("/candidates/<int:candidate_id>/delete")
def delete(candidate_id: int):
    candidate = get_candidate(candidate_id)
    agent_id = candidate.agent_id
    services.erase_candidate(db.session, candidate, now(), _actor())
    audit.record(db.session, current_user, "candidate_deleted", f"candidate {candidate.id} (interview {agent_id})",
                 address=request.remote_addr)
    db.session.commit()
    flash("The candidate's personal data and answers are erased. Their anonymous events still count in metrics.", "success")
    return redirect(url_for("candidates.index", agent_id=agent_id))
