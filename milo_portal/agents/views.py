"""Pages for listing, creating and editing interview agents, and the Share panel."""
from __future__ import annotations

import io

import segno
from flask import abort, current_app, flash, redirect, render_template, request, send_file, url_for
from flask_login import current_user
from sqlalchemy import select

from ..auth.forms import EmptyForm
from ..clock import now
from ..errors import DomainError
from ..extensions import db
from ..forms_common import choices, rules_from_form, rules_into_form
from ..models import Agent, Question, User
from ..settings import checks
from . import bp, services
from .access import get_agent, get_question
from .forms import AgentForm, NewAgentForm, QuestionForm


def _owner_choices(form: AgentForm) -> None:
    users = db.session.scalars(select(User).where(User.active.is_(True)).order_by(User.name)).all()
    form.owner_id.choices = choices((u.id, u.name) for u in users)


def _data(form: AgentForm) -> services.AgentData:
    return services.AgentData(
        title=form.title.data, company=form.company.data, role_level=form.role_level.data,
        description=form.description.data or "", duration_minutes=form.duration_minutes.data,
        deadline_days=form.deadline_days.data, default_channel=form.default_channel.data,
        external_url=form.external_url.data, owner_id=form.owner_id.data, rules=rules_from_form(form),
    )


@bp.get("/")
def home():
    return redirect(url_for("agents.index"))


@bp.get("/agents")
def index():
    archived = request.args.get("archived") == "1"
    if services.fold_counts_if_due(db.session):
        db.session.commit()
    agents = services.list_agents(db.session, archived)
    counts = services.stage_counts(db.session, [a.id for a in agents])
    funnels = services.funnels(db.session, [a.id for a in agents])
    return render_template("agents/index.html", agents=agents, counts=counts, funnels=funnels, archived=archived)


@bp.route("/agents/new", methods=["GET", "POST"])
def new():
    form = NewAgentForm()
    _owner_choices(form)
    if request.method == "GET":
        form.owner_id.data = current_user.id
        company = db.session.scalar(select(Agent.company).order_by(Agent.id.desc()).limit(1))
        form.company.data = form.company.data or company
    if form.validate_on_submit():
        try:
            agent = services.create_agent(
                db.session, _data(form), (form.questions.data or "").splitlines()
            )
        except DomainError as err:
            db.session.rollback()
            getattr(form, err.field or "title").errors.append(err.message)
        else:
            count = len(agent.questions)
            next_step = (f"It has {count} question{'s' * (count != 1)}: press Share when you are ready."
                         if count else "Add questions below, then press Share.")
            flash(f"“{agent.title}” is ready. {next_step}", "success")
            return redirect(url_for("agents.detail", agent_id=agent.id))
    return render_template("agents/form.html", form=form, agent=None)


@bp.get("/agents/<int:agent_id>")
def detail(agent_id: int):
    agent = get_agent(agent_id)
    if services.fold_counts_if_due(db.session):
        db.session.commit()
    counts = services.stage_counts(db.session, [agent.id])[agent.id]
    return render_template("agents/detail.html", agent=agent, counts=counts,
                           funnel=services.funnels(db.session, [agent.id])[agent.id],
                           question_form=QuestionForm(), action_form=EmptyForm(),
                           failing=checks.failing(db.session, now(), agent.id))


@bp.route("/agents/<int:agent_id>/edit", methods=["GET", "POST"])
def edit(agent_id: int):
    agent = get_agent(agent_id)
    form = AgentForm(obj=agent)
    if request.method == "GET":
        rules_into_form(form, agent)
    _owner_choices(form)
    if agent.owner_id and str(agent.owner_id) not in {c.value for c in form.owner_id.choices}:
        form.owner_id.choices += choices([(agent.owner_id, agent.owner.name + " (inactive)")])
    if form.validate_on_submit():
        try:
            services.update_agent(db.session, agent, _data(form))
        except DomainError as err:
            db.session.rollback()
            getattr(form, err.field or "title").errors.append(err.message)
        else:
            flash("Saved.", "success")
            return redirect(url_for("agents.detail", agent_id=agent.id))
    return render_template("agents/form.html", form=form, agent=agent)


@bp.post("/agents/<int:agent_id>/archive")
def archive(agent_id: int):
    agent = get_agent(agent_id)
    archived = request.form.get("archived") == "1"
    services.set_archived(db.session, agent, archived, now())
    flash("Archived: its share link is closed." if archived else "Back in the active list.", "success")
    return redirect(url_for("agents.detail", agent_id=agent.id))


# --- questions (inline, HTMX) -------------------------------------------------------------

def _questions_response(agent: Agent, form: QuestionForm | None = None, editing: int | None = None,
                        status: int = 200):
    if request.htmx:
        return render_template("agents/_questions.html", agent=agent,
                               question_form=form or QuestionForm(formdata=None),
                               editing=editing, action_form=EmptyForm()), status
    if form is not None and form.errors:
        for errors in form.errors.values():
            for e in errors:
                flash(e, "error")
    return redirect(url_for("agents.detail", agent_id=agent.id, _anchor="questions"))


@bp.post("/agents/<int:agent_id>/questions")
def add_question(agent_id: int):
    agent = get_agent(agent_id)
    form = QuestionForm()
    if form.validate_on_submit():
        try:
            services.add_question(db.session, agent, form.text.data)
        except DomainError as err:
            db.session.rollback()
            form.text.errors.append(err.message)
            return _questions_response(agent, form, status=422)
        return _questions_response(agent)
    return _questions_response(agent, form, status=422)


@bp.get("/agents/<int:agent_id>/questions/<int:question_id>/edit")
def edit_question_form(agent_id: int, question_id: int):
    agent = get_agent(agent_id)
    question = get_question(agent, question_id)
    if not request.htmx:
        return redirect(url_for("agents.detail", agent_id=agent.id, edit=question.id, _anchor="questions"))
    return render_template("agents/_questions.html", agent=agent, question_form=QuestionForm(),
                           editing=question.id, action_form=EmptyForm())


@bp.post("/agents/<int:agent_id>/questions/<int:question_id>")
def update_question(agent_id: int, question_id: int):
    agent = get_agent(agent_id)
    question = get_question(agent, question_id)
    form = QuestionForm(prefix=f"q{question.id}")
    if form.validate_on_submit():
        try:
            services.update_question(db.session, question, form.text.data)
        except DomainError as err:
            db.session.rollback()
            form.text.errors.append(err.message)
        else:
            return _questions_response(agent)
    if request.htmx:
        return render_template("agents/_questions.html", agent=agent, question_form=QuestionForm(formdata=None),
                               editing=question.id, edit_form=form, action_form=EmptyForm()), 422
    return _questions_response(agent, form)


@bp.post("/agents/<int:agent_id>/questions/<int:question_id>/move")
def move_question(agent_id: int, question_id: int):
    agent = get_agent(agent_id)
    question = get_question(agent, question_id)
    try:
        services.move_question(db.session, question, request.form.get("direction", ""))
    except DomainError:
        abort(400)
    return _questions_response(agent)


@bp.post("/agents/<int:agent_id>/questions/<int:question_id>/delete")
def delete_question(agent_id: int, question_id: int):
    agent = get_agent(agent_id)
    question = get_question(agent, question_id)
    services.delete_question(db.session, question)
    return _questions_response(agent)


# --- Share panel --------------------------------------------------------------------------

def _share_context(agent: Agent) -> dict:
    src = services.clean_source_tag(request.args.get("src"))
    base = current_app.config["MILO_PUBLIC_BASE_URL"]
    return {
        "agent": agent, "src": src, "action_form": EmptyForm(),
        "link": services.share_url(base, agent),
        "tagged_link": services.share_url(base, agent, src) if src else None,
        "suggested_sources": services.SUGGESTED_SOURCES,
    }


@bp.get("/agents/<int:agent_id>/share")
def share(agent_id: int):
    agent = get_agent(agent_id)
    ctx = _share_context(agent)
    if request.htmx:
        return render_template("agents/_share.html", **ctx)
    return render_template("agents/share.html", **ctx)


@bp.get("/agents/<int:agent_id>/share/tagged")
def share_tagged(agent_id: int):
    agent = get_agent(agent_id)
    return render_template("agents/_share_tagged.html", **_share_context(agent))


@bp.get("/agents/<int:agent_id>/share/qr.<fmt>")
def share_qr(agent_id: int, fmt: str):
    agent = get_agent(agent_id)
    if fmt not in ("svg", "png"):
        abort(404)
    src = services.clean_source_tag(request.args.get("src"))
    url = services.share_url(current_app.config["MILO_PUBLIC_BASE_URL"], agent, src)
    qr = segno.make(url, error="m")
    buf = io.BytesIO()
    if fmt == "svg":
        qr.save(buf, kind="svg", scale=10, border=4, title=agent.title)
        mimetype = "image/svg+xml"
    else:
        qr.save(buf, kind="png", scale=20, border=4)
        mimetype = "image/png"
    buf.seek(0)
    name = f"share-{services.clean_source_tag(agent.title) or 'interview'}{'-' + src if src else ''}.{fmt}"
    return send_file(buf, mimetype=mimetype, as_attachment=request.args.get("download") == "1",
                     download_name=name, max_age=0)


@bp.post("/agents/<int:agent_id>/share/rotate")
def share_rotate(agent_id: int):
    agent = get_agent(agent_id)
    services.rotate_share_token(db.session, agent)
    flash("New share link made. The old link no longer works.", "success")
    return _share_after_change(agent)


@bp.post("/agents/<int:agent_id>/share/enabled")
def share_enabled(agent_id: int):
    agent = get_agent(agent_id)
    enabled = request.form.get("enabled") == "1"
    services.set_share_enabled(db.session, agent, enabled)
    flash("The share link is on." if enabled else "The share link is off: it shows “closed”.", "success")
    return _share_after_change(agent)


def _share_after_change(agent: Agent):
    if request.htmx:
        return render_template("agents/_share.html", **_share_context(agent))
    return redirect(url_for("agents.share", agent_id=agent.id))
