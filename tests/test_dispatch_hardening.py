"""The dispatcher against slow and odd servers and messages that cannot be built: a stuck
channel holds back no other, one bad message fails alone, an unknown outcome is in doubt."""
from __future__ import annotations

import importlib
import time
from datetime import timedelta

import pytest
from sqlalchemy import update

from milo_portal.extensions import db
from milo_portal.followups.services import dispatch
from milo_portal.models import Candidate, Event, Message, MessageStatus
from tests.conftest import at, make_agent, make_due_invites, use_smtp
from tests.servers import FakeTwilio, TricklingSmtpServer, UnconfirmingSmtpSink
from tests.timing import finishes_within

T = at("2026-11-30T10:00:00")  # Monday 10:00 UTC, inside the window


@pytest.fixture()
def twilio(app):
    fake = FakeTwilio().start()
    app.config.update(MILO_SMS_BACKEND="twilio", TWILIO_ACCOUNT_SID="AC" + "1" * 32, TWILIO_AUTH_TOKEN="secret-token",
                      TWILIO_FROM_NUMBER="+14155550000", TWILIO_API_BASE_URL=fake.url, MILO_TWILIO_TIMEOUT=5)
    yield fake
    fake.stop()


def _statuses() -> dict[str, str]:
    db.session.expire_all()
    return {m.candidate.email or m.candidate.phone: m.status for m in db.session.query(Message)}


def test_a_stuck_mail_server_holds_back_neither_the_texts_nor_the_dispatch(app, team_settings, twilio):
    """Defect: a mail server answering one byte a second stalled the dispatch past 90 s with
    MILO_SMTP_TIMEOUT=3, and the SMS queued behind the e-mail waited as long."""
    importlib.import_module("twilio.rest")  # loaded before the clock starts: a first import is slow on a busy machine

    trickle = TricklingSmtpServer(interval=1.0).start()
    use_smtp(app, trickle.port, timeout=3)
    app.config["MILO_SEND_DEADLINE"] = 6
    agent = make_agent("Mixed")
    mail = Candidate(agent_id=agent.id, name="Ada", email="ada@example.com", timezone="UTC", channel="email",
                     deadline_at=T + timedelta(days=5))
    text = Candidate(agent_id=agent.id, name="Bea", phone="+14155550100", timezone="UTC", channel="sms",
                     deadline_at=T + timedelta(days=5))
    db.session.add_all([mail, text])
    db.session.flush()
    # The e-mail is first in the queue, as when the SMS waited behind it.
    db.session.add_all([Message(candidate_id=c.id, kind="invite", step=1, channel=c.channel, scheduled_for=T,
                                status=MessageStatus.SCHEDULED) for c in (mail, text)])
    db.session.commit()
    try:
        result, started, elapsed = finishes_within(40, lambda: dispatch(db.session, T))
    finally:
        trickle.stop()
    assert elapsed < 6 + 4  # the send deadline, and slack for a busy machine
    assert twilio.received_at and twilio.received_at[0] - started < 4  # while the e-mail was stuck
    assert len(result.sent) == 1 and "by sms" in result.sent[0]
    assert len(result.retried) == 1 and "did not finish within 6 s" in result.retried[0]
    email = db.session.query(Message).filter_by(channel="email").one()
    assert (email.status, email.attempts) == (MessageStatus.SCHEDULED, 1) and email.scheduled_for > T
    assert _statuses()["+14155550100"] == MessageStatus.SENT


def test_flask_milo_dispatch_returns_by_the_send_deadline(app, database_url, team_settings):
    """Defect: `flask milo dispatch` stalled for minutes on a mail server answering one byte a
    second (MILO_SMTP_TIMEOUT=3), and the SMS queued behind the e-mail with it."""
    from tests.test_dispatch_processes import _cli_env, _dispatch_process

    agent = make_agent("Shell")
    mail = Candidate(agent_id=agent.id, name="Ada", email="ada@example.com", timezone="UTC", channel="email",
                     deadline_at=T + timedelta(days=5))
    text = Candidate(agent_id=agent.id, name="Bea", phone="+14155550100", timezone="UTC", channel="sms",
                     deadline_at=T + timedelta(days=5))
    db.session.add_all([mail, text])
    db.session.flush()
    db.session.add_all([Message(candidate_id=c.id, kind="invite", step=1, channel=c.channel, scheduled_for=T,
                                status=MessageStatus.SCHEDULED) for c in (mail, text)])
    db.session.commit()
    trickle = TricklingSmtpServer(interval=1.0).start()
    try:
        started = time.monotonic()
        proc = _dispatch_process(_cli_env(database_url, trickle.port, MILO_SMTP_TIMEOUT="3", MILO_SEND_DEADLINE="4"))
        output = proc.communicate(timeout=60)[0]
        elapsed = time.monotonic() - started
    finally:
        trickle.stop()
    assert proc.returncode == 0, output
    assert "sent 1," in output and "retrying 1," in output and "did not finish within 4 s" in output
    assert elapsed < 4 + 15, output  # the deadline, and the start of a Python process on a busy machine


def test_a_message_that_cannot_be_built_fails_alone_and_the_batch_goes_on(app, smtp, team_settings):
    """Defect: a line break in a candidate's name crashed the dispatch run with BadHeaderError and
    left the whole claimed batch in doubt."""
    ids = make_due_invites(3, T)
    db.session.execute(update(Candidate).where(Candidate.id == ids[0]).values(name="P0\r\nBcc: x@evil.example"))
    db.session.execute(update(Candidate).where(Candidate.id == ids[1])
                       .values(email="p1@example.com\r\nBcc: x@evil.example"))
    db.session.commit()
    result = dispatch(db.session, T)
    assert len(result.sent) == 2 and len(result.failed) == 1 and result.in_doubt == 0
    by_candidate = {m.candidate_id: m for m in db.session.query(Message)}
    assert by_candidate[ids[0]].status == MessageStatus.SENT  # the name is put on one line
    assert by_candidate[ids[2]].status == MessageStatus.SENT
    bad = by_candidate[ids[1]]
    assert bad.status == MessageStatus.FAILED and "is not valid" in bad.last_error
    event = db.session.query(Event).filter_by(candidate_id=ids[1], type="failed").one()
    assert event.message_id == bad.id and "is not valid" in event.detail
    received = smtp.wait_for(2)
    time.sleep(0.2)
    assert sorted(r.rcpt_tos[0] for r in smtp.messages) == ["p0@example.com", "p2@example.com"]
    first = next(r.message for r in received if r.rcpt_tos == ["p0@example.com"])
    assert first["Subject"] == "P0, your interview for Picker at Acme" and first["Bcc"] is None


def test_any_error_rendering_one_message_fails_it_alone(app, smtp, team_settings, monkeypatch):
    """Any exception while rendering or building one message is that message's permanent
    failure, with a readable reason; the others are sent."""
    from milo_portal.messaging import services

    real = services.render_content

    def render_content(subject, body, channel, context, **kwargs):
        if context.candidate.first_name == "P1":
            raise ZeroDivisionError("division by zero")
        return real(subject, body, channel, context, **kwargs)

    monkeypatch.setattr(services, "render_content", render_content)
    ids = make_due_invites(3, T)
    result = dispatch(db.session, T)
    assert len(result.sent) == 2 and len(result.failed) == 1
    bad = db.session.query(Message).filter_by(candidate_id=ids[1]).one()
    assert bad.status == MessageStatus.FAILED
    assert bad.last_error == "This message cannot be rendered: ZeroDivisionError: division by zero"
    assert db.session.query(Event).filter_by(candidate_id=ids[1], type="failed").count() == 1
    assert not db.session.query(Message).filter(Message.status.in_((MessageStatus.SENDING,
                                                                    MessageStatus.IN_DOUBT))).count()


def test_a_long_role_title_shortens_the_subject_instead_of_failing_every_invite(app, smtp, team_settings):
    """Defect: a 167-character role title (the form allows 200) made every invite of that
    interview fail for good: "Too long: 231 characters"."""
    title = ("Senior principal warehouse operations and logistics coordination specialist for the "
             "northern distribution centre, night shifts and weekend cover rota included, Leeds area")[:167]
    assert len(title) == 167
    agent = make_agent(title, company="Northwind Traders International Holdings")
    c = Candidate(agent_id=agent.id, name="Alexandra Smith", email="alex@example.com", timezone="UTC",
                  deadline_at=T + timedelta(days=5))
    db.session.add(c)
    db.session.flush()
    db.session.add(Message(candidate_id=c.id, kind="invite", step=1, channel="email", scheduled_for=T,
                           status=MessageStatus.SCHEDULED))
    db.session.commit()
    result = dispatch(db.session, T)
    assert len(result.sent) == 1, result.failed
    subject = smtp.wait_for(1)[0].message["Subject"]
    assert len(subject) <= 200 and subject.endswith("…")
    assert subject.startswith(f"Alexandra, your interview for {title[:60]}")
    assert not subject[:-1].endswith(" ")  # cut at a word boundary, not after a space
    message = db.session.query(Message).one()
    assert message.subject == subject


def test_a_send_whose_outcome_is_unknown_is_in_doubt_and_never_sent_again(app, team_settings):
    """Defect: no reply to the end of a message's data counted as a temporary failure, so the
    message was sent again although the server may have accepted it already."""
    sink = UnconfirmingSmtpSink().start()
    make_due_invites(2, T)
    try:
        use_smtp(app, sink.port, timeout=1)
        result = dispatch(db.session, T)
        assert result.in_doubt == 1 and not result.sent and not result.retried
        assert "did not confirm it" in result.doubtful[0]
        for minutes in (5, 30, 120):
            dispatch(db.session, T + timedelta(minutes=minutes))
    finally:
        sink.stop()
    statuses = sorted(_statuses().values())
    # The first message is in doubt and stays so; the second waited (the server is in trouble)
    # and was then tried on a later tick, with the same outcome.
    assert statuses == [MessageStatus.IN_DOUBT, MessageStatus.IN_DOUBT]
    assert sorted(r.rcpt_tos[0] for r in sink.messages) == ["p0@example.com", "p1@example.com"]
    doubt = db.session.query(Message).filter_by(status=MessageStatus.IN_DOUBT).first()
    assert "may or may not have been accepted" in doubt.last_error and doubt.lease_until is None


def test_no_transaction_is_open_on_any_connection_while_the_dispatcher_sends(app, smtp, team_settings, monkeypatch):
    """Defect: the outcome of each send was written at once (a stage move is an UPDATE), so
    the next sends of the group went out inside that open transaction, which on SQLite held
    the write lock for up to half a second of sends. Outcomes are now recorded between sends."""
    from sqlalchemy import event

    from milo_portal.messaging import channels

    open_now: set[int] = set()
    seen: list[int] = []

    def began(conn):
        open_now.add(id(conn))

    def ended(conn):
        open_now.discard(id(conn))

    real_send = channels.send_built

    def send_built(built, connection=None):
        seen.append(len(open_now))
        return real_send(built, connection)

    ids = make_due_invites(12, T)
    engine = db.engine
    hooks = [("begin", began), ("commit", ended), ("rollback", ended)]
    for name, hook in hooks:
        event.listen(engine, name, hook)
    monkeypatch.setattr(channels, "send_built", send_built)
    try:
        result = dispatch(db.session, T)
    finally:
        for name, hook in hooks:
            event.remove(engine, name, hook)
    assert len(result.sent) == 12 and len(seen) == 12
    assert seen == [0] * 12
    assert {m.candidate_id: m.status for m in db.session.query(Message)} == {i: MessageStatus.SENT for i in ids}
    assert db.session.query(Event).filter(Event.candidate_id.in_(ids), Event.type == "invited").count() == 12
