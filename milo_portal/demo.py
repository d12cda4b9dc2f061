"""Demo data so a new installation can be tried at once (``flask milo demo-data``)."""
from __future__ import annotations

import random

from sqlalchemy import select
from sqlalchemy.orm import Session

from .agents.services import AgentData, create_agent, suggested_channel
from .auth.services import create_user
from .models import Agent, User

DEMO_PASSWORD = "demo-password-1"
TEAM = [
    ("Dana Recruiter", "dana@demo.milo.test"),
    ("Sam Sourcer", "sam@demo.milo.test"),
]
AGENTS = [
    ("Warehouse associate", "entry", 10, 5, [
        "Tell us about a time you worked a busy shift. What kept you going?",
        "Which shifts can you work (early, late, nights, weekends)?",
        "How would you get to our site in Riverside?",
    ]),
    ("Customer support specialist", "professional", 15, 7, [
        "Walk us through how you calm down an upset customer.",
        "Describe a support process you improved. What changed?",
        "Why do you want to work in support at Acme?",
        "What would your last manager say you should work on?",
    ]),
    ("Senior backend engineer", "senior", 25, 10, [
        "Describe a system you designed that had to survive failures. What broke, and how did you find out?",
        "How do you decide when to pay down technical debt?",
        "Tell us about a disagreement with a colleague on a technical decision and how it ended.",
    ]),
]


def create_demo_data(session: Session, seed: int = 1) -> str:
    """Create the demo team and agents if they are not there yet; return a summary line."""
    rng = random.Random(seed)
    users = []
    for name, email in TEAM:
        user = session.scalar(select(User).where(User.email == email))
        users.append(user or create_user(session, email, name, DEMO_PASSWORD))
    made = 0
    for title, level, minutes, days, questions in AGENTS:
        if session.scalar(select(Agent.id).where(Agent.title == title)) is not None:
            continue
        create_agent(session, AgentData(
            title=title, company="Acme Logistics", role_level=level,
            description=f"Acme is hiring a {title.lower()}. This short interview replaces the first phone call.",
            duration_minutes=minutes, deadline_days=days,
            default_channel=suggested_channel(level), external_url=None,
            owner_id=rng.choice(users).id,
        ), questions)
        made += 1
    return (f"Demo team: {', '.join(e for _, e in TEAM)} (password {DEMO_PASSWORD}); "
            f"{made} new interview agent(s).")
