"""A small hand-built history for the Metrics tests, with every answer worked out by hand
in test_metrics.py (no figure is computed with the code under test)."""
from __future__ import annotations

from datetime import timedelta

from milo_portal.extensions import db
from milo_portal.models import Answer, Candidate, Event, Message
from tests.conftest import at, make_agent

NOW = at("2026-11-20T12:00:00")
# The filters of the tests: invited 1–19 November 2026, recruiter in UTC.
RANGE = {"period": "custom", "from": "2026-11-01", "to": "2026-11-19"}


def _person(agent, name, *, stage, channel="email", invited=None, clicked=None, started=None, completed=None,
            visited=None, device=None, tz="UTC", source="manual", src=None, answers=(), events=(),
            variant=None, invite_status="sent", created=None, email=None):
    invited_at = at(invited) if invited else None
    c = Candidate(agent_id=agent.id, name=name, email=email or f"{name.lower()}@example.com", timezone=tz,
                  source=source, source_detail=src, channel=channel, stage=stage, device_class=device,
                  invited_at=invited_at, clicked_at=at(clicked) if clicked else None,
                  started_at=at(started) if started else None, completed_at=at(completed) if completed else None,
                  visited_at=at(visited) if visited else None,
                  created_at=at(created) if created else (invited_at - timedelta(hours=1) if invited_at else NOW),
                  deadline_at=NOW + timedelta(days=5))
    db.session.add(c)
    db.session.flush()
    message = None
    if variant:
        message = Message(candidate_id=c.id, kind="invite", step=1, channel=channel, variant=variant,
                          status=invite_status, scheduled_for=invited_at, sent_at=invited_at, created_at=invited_at)
        db.session.add(message)
        db.session.flush()
    for i, when in enumerate(answers, start=1):
        q = agent.questions[i - 1]
        db.session.add(Answer(candidate_id=c.id, question_id=q.id, position=i, question_text=q.text, body="x",
                              answered_at=at(when)))
    for etype, when in events:
        db.session.add(Event(candidate_id=c.id, agent_id=agent.id, type=etype, at=at(when),
                             message_id=message.id if message and etype in ("bounced", "failed") else None))
    return c


def build() -> dict[str, int]:
    """The dataset; returns the candidates' ids by name."""
    a = make_agent("Picker", questions=("Q1 shifts?", "Q2 commute?", "Q3 lifting?"), role_level="entry")
    b = make_agent("Engineer", questions=("B1 design?", "B2 debt?"), role_level="senior")
    people = [
        # Monday 2 Nov 10:00 UTC = 11:00 in Berlin (CET): heat cell 0*24+11.
        _person(a, "P1", stage="completed", invited="2026-11-02T10:00", clicked="2026-11-02T12:00",
                started="2026-11-02T12:05", completed="2026-11-02T12:31", device="desktop", tz="Europe/Berlin",
                answers=("2026-11-02T12:10", "2026-11-02T12:20", "2026-11-02T12:30"),
                events=[("opened", "2026-11-02T11:00")], variant="A", source="share_link", src="linkedin"),
        # Tuesday 3 Nov 09:00 UTC = 04:00 in New York (EST since 1 Nov): heat cell 1*24+4.
        _person(a, "P2", stage="opened", invited="2026-11-03T09:00", tz="America/New_York",
                events=[("opened", "2026-11-03T15:00"), ("reminded", "2026-11-04T15:00"),
                        ("reminded", "2026-11-05T15:00")], variant="B"),
        _person(a, "P3", stage="invited", invited="2026-11-03T10:00", events=[("machine_opened", "2026-11-03T10:00")],
                variant="A"),
        _person(a, "P4", stage="invited", invited="2026-11-03T11:00", events=[("bounced", "2026-11-03T11:01")],
                variant="B", invite_status="failed", email="p4@bounce.example"),
        _person(a, "P5", stage="started", channel="sms", invited="2026-11-04T10:00", clicked="2026-11-04T11:00",
                started="2026-11-04T11:10", device="mobile", answers=("2026-11-04T11:20",)),
        _person(b, "P6", stage="invited", invited="2026-11-05T09:00", visited="2026-11-05T09:00"),
        _person(b, "P7", stage="clicked", channel="sms", invited="2026-11-05T10:00", clicked="2026-11-05T20:00",
                device="mobile", source="share_link", src="linkedin"),
        _person(b, "P8", stage="completed", channel="whatsapp", invited="2026-11-06T10:00",
                clicked="2026-11-07T10:00", started="2026-11-07T10:30", completed="2026-11-07T11:00",
                device="mobile", answers=("2026-11-07T10:40", "2026-11-07T10:50"),
                events=[("reminded", "2026-11-07T09:00")], created="2026-11-04T10:00"),
        # Outside the range, and never invited: counted nowhere on the page.
        _person(a, "P9", stage="completed", invited="2026-10-20T10:00", clicked="2026-10-20T11:00",
                started="2026-10-20T11:05", completed="2026-10-20T11:30"),
        _person(a, "P10", stage="added"),
        _person(b, "P11", stage="expired", invited="2026-11-08T10:00"),
        _person(a, "P12", stage="opted_out", invited="2026-11-09T10:00", events=[("opened", "2026-11-09T12:00")]),
    ]
    # Follow-ups of P2 (one retried once): deliverability counts every message of the range.
    p2 = people[1]
    db.session.add_all([
        Message(candidate_id=p2.id, kind="reminder", step=1, channel="email", status="sent",
                scheduled_for=at("2026-11-04T15:00"), sent_at=at("2026-11-04T15:00"), created_at=at("2026-11-04T15:00")),
        Message(candidate_id=p2.id, kind="reminder", step=2, channel="email", status="sent", attempts=2,
                scheduled_for=at("2026-11-05T15:00"), sent_at=at("2026-11-05T15:00"), created_at=at("2026-11-05T15:00")),
    ])
    db.session.commit()
    ids = {c.name: c.id for c in people}
    ids["agent_a"], ids["agent_b"] = a.id, b.id
    return ids
