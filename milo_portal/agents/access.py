"""Turning ids from URLs into agents and questions: the one place that answers 404 for them."""
from __future__ import annotations

from flask import abort

from ..extensions import db
from ..models import Agent, Question


def get_agent(agent_id: int) -> Agent:
    """The one place that turns an agent id from a URL into an agent, or 404."""
    agent = db.session.get(Agent, agent_id)
    if agent is None:
        abort(404)
    return agent


def get_question(agent: Agent, question_id: int) -> Question:
    """A question of this agent, or 404."""
    question = db.session.get(Question, question_id)
    if question is None or question.agent_id != agent.id:
        abort(404)
    return question
