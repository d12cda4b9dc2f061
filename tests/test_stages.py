"""The stage machine: forward only, one event per move, completed is final."""
from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from milo_portal.candidates import stages
from milo_portal.extensions import db
from milo_portal.models import Candidate, Event, Stage
from tests.conftest import at, make_agent

T = at("2026-12-01T10:00:00")


def _candidate(stage=Stage.ADDED) -> Candidate:
    agent = make_agent()
    c = Candidate(agent_id=agent.id, email="a@b.test", name="A", stage=stage)
    db.session.add(c)
    db.session.commit()
    return c


def _events(c, type_=None):
    q = db.session.query(Event).filter_by(candidate_id=c.id)
    if type_:
        q = q.filter_by(type=type_)
    return q.count()


@pytest.mark.parametrize("current,target,ok", [
    (Stage.ADDED, Stage.INVITED, True),
    (Stage.ADDED, Stage.CLICKED, True),        # a link sent by hand skips "invited"
    (Stage.INVITED, Stage.ADDED, False),
    (Stage.STARTED, Stage.CLICKED, False),
    (Stage.STARTED, Stage.COMPLETED, True),
    (Stage.COMPLETED, Stage.EXPIRED, False),
    (Stage.COMPLETED, Stage.OPTED_OUT, False),
    (Stage.COMPLETED, Stage.STARTED, False),
    (Stage.EXPIRED, Stage.COMPLETED, False),
    (Stage.CLICKED, Stage.EXPIRED, True),
    (Stage.OPTED_OUT, Stage.CLICKED, False),
])
def test_it_only_moves_forward(current, target, ok):
    assert stages.can_move(current, target) is ok


def test_a_move_writes_one_event_and_stamps_the_time(app):
    c = _candidate()
    assert stages.move(db.session, c, Stage.CLICKED, T, device_class="mobile") is True
    db.session.commit()
    assert (c.stage, c.clicked_at, c.device_class) == (Stage.CLICKED, T, "mobile")
    assert _events(c, "clicked") == 1


def test_a_second_click_is_not_a_second_event(app):
    c = _candidate()
    stages.move(db.session, c, Stage.CLICKED, T)
    assert stages.move(db.session, c, Stage.CLICKED, at("2026-12-01T11:00:00")) is False
    db.session.commit()
    assert _events(c, "clicked") == 1 and c.clicked_at == T


def test_completed_is_final(app):
    c = _candidate(Stage.STARTED)
    assert stages.move(db.session, c, Stage.COMPLETED, T)
    for target in (Stage.EXPIRED, Stage.OPTED_OUT, Stage.STARTED, Stage.CLICKED):
        assert stages.move(db.session, c, target, T) is False
    db.session.commit()
    assert c.stage == Stage.COMPLETED and _events(c) == 1


def test_two_sessions_racing_write_one_event(app):
    """Two requests load the same candidate and both try to record the click."""
    c = _candidate(Stage.INVITED)
    cid = c.id
    db.session.remove()
    other_session = Session(db.engine, expire_on_commit=False)
    try:
        second = other_session.get(Candidate, cid)  # loaded while still "invited"
        other_session.commit()
        first = db.session.get(Candidate, cid)
        assert stages.move(db.session, first, Stage.CLICKED, T)
        db.session.commit()
        assert second.stage == Stage.INVITED  # its stale view of the row
        assert stages.move(other_session, second, Stage.CLICKED, T) is False
        other_session.commit()
    finally:
        other_session.close()
    assert db.session.query(Event).filter_by(candidate_id=cid, type="clicked").count() == 1


def test_unknown_stage_is_refused():
    with pytest.raises(ValueError):
        stages.allowed_from("hired")
