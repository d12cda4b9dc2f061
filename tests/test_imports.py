"""Bulk upload end to end: review, remapping, creating in hidden chunks, undo, report, limits."""
from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from milo_portal import create_app
from milo_portal.candidates import services as candidates, tally
from milo_portal.config import TestConfig
from milo_portal.extensions import db
from milo_portal.followups import services as followups
from milo_portal.imports import services
from milo_portal.models import Candidate, Event, ImportBatch, ImportRow, Message, MessageStatus, Stage
from tests.conftest import at, make_agent
from tests.imports_files import csv_bytes, pdf_bytes, zip_bytes

NOW = at("2026-11-24T10:00:00")  # a Tuesday


@pytest.fixture()
def folder(app, tmp_path) -> Path:
    """Uploads under review go to a folder of the test's own."""
    app.config["MILO_IMPORT_DIR"] = str(tmp_path / "imports")
    return tmp_path / "imports"


@pytest.fixture()
def clock(monkeypatch):
    """The views' wall clock, fixed at NOW."""
    from milo_portal.imports import views

    monkeypatch.setattr(views, "now", lambda: NOW)
    return NOW


def upload(client, agent, files: dict[str, bytes], htmx: bool = False, **form):
    """Post files to the upload form as a browser would (multipart)."""
    data = {"agent_id": str(agent.id), "mode": "review", "channel": "email", "invite": "1", **form,
            "files": [(io.BytesIO(content), name) for name, content in files.items()]}
    headers = {"HX-Request": "true"} if htmx else {}
    return client.post("/candidates/uploads", data, content_type="multipart/form-data", headers=headers)


def only_batch() -> ImportBatch:
    db.session.expire_all()
    return db.session.scalars(select(ImportBatch)).one()


MIXED = [
    ["Name", "E-mail address", "Mobile"],
    ["Ada Lovelace", "ada@example.com", "+44 7911 123456"],   # 2: new
    ["Grace Hopper", "grace@example.com", ""],                # 3: new
    ["Alan Turing", "", "+1 415 555 2671"],                   # 4: new (phone only, e-mail channel? no: SMS)
    ["Known Person", "KNOWN@example.com", ""],                # 5: duplicate of a candidate
    ["Ada Again", "ada@example.com", ""],                     # 6: duplicate of row 2
    ["Bad Mail", "not-an-address", ""],                       # 7: invalid e-mail
    ["Nobody", "", ""],                                       # 8: no way to contact
]


def _known(agent):
    contact = candidates.clean_contact(candidates.ContactData(name="Known", email="known@example.com"), "US", "UTC")
    candidates.add_candidate(db.session, agent, contact, NOW + timedelta(days=7), NOW)
    db.session.commit()


def test_rows_are_new_duplicate_or_invalid_with_exact_counts_and_reasons(auth, client, folder, clock):
    agent = make_agent()
    _known(agent)
    response = upload(client, agent, {"people.csv": csv_bytes(MIXED)})
    assert response.status_code == 303
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Add 2 candidates and invite them" in page
    batch = only_batch()
    result = services.review(db.session, batch, services.load_items(folder, batch),
                             services.parse_mapping(batch.mapping), "email")
    outcomes = [(r.row, r.outcome, r.reason) for r in result.rows]
    assert outcomes == [
        (2, "new", ""), (3, "new", ""),
        (4, "invalid", "no e-mail, and the channel is E-mail"),
        (5, "duplicate", "already a candidate of this interview (same e-mail)"),
        (6, "duplicate", "same e-mail as row 2 of people.csv"),
        (7, "invalid", "bad e-mail “not-an-address”"),
        (8, "invalid", "no way to contact: no e-mail and no phone"),
    ]
    assert dict(result.counts) == {"new": 2, "duplicate": 2, "invalid": 3}
    # The channel decides what a row needs: by SMS the phone-only row is new, Grace is not.
    by_sms = services.review(db.session, batch, services.load_items(folder, batch),
                             services.parse_mapping(batch.mapping), "sms")
    assert [(r.row, r.outcome) for r in by_sms.rows][:3] == [(2, "new"), (3, "invalid"), (4, "new")]
    assert by_sms.rows[1].reason == "no phone, and the channel is SMS"


def test_filters_show_only_the_rows_of_one_outcome(auth, client, folder, clock):
    agent = make_agent()
    upload(client, agent, {"people.csv": csv_bytes(MIXED)})
    batch = only_batch()
    body = client.htmx_post(f"/candidates/uploads/{batch.id}/review", {"show": "invalid"}).get_data(as_text=True)
    assert "Bad Mail" in body and "Nobody" in body and "Grace Hopper" not in body
    assert "<html" not in body  # the fragment only


def test_remapping_a_column_changes_the_outcome_without_uploading_again(auth, client, folder, clock):
    agent = make_agent()
    upload(client, agent, {"fair.csv": csv_bytes([["Name", "Contact"], ["Ada", "ada@example.com"],
                                                  ["Grace", "grace@example.com"]])})
    batch = only_batch()
    page = client.get(f"/candidates/uploads/{batch.id}").get_data(as_text=True)
    assert "Nothing new to add" in page and page.count("no way to contact") == 2
    body = client.htmx_post(f"/candidates/uploads/{batch.id}/review",
                            {"map-0-0": "name", "map-0-1": "email", "channel": "email", "invite": "1"})
    text = body.get_data(as_text=True)
    assert body.status_code == 200 and "Add 2 candidates and invite them" in text and "no way to contact" not in text
    # Nothing was stored by checking: confirming with the new mapping creates both.
    response = client.post(f"/candidates/uploads/{batch.id}/confirm",
                           {"map-0-0": "name", "map-0-1": "email", "channel": "email", "invite": "1"})
    assert response.status_code == 303
    assert sorted(db.session.scalars(select(Candidate.email))) == ["ada@example.com", "grace@example.com"]


def test_confirming_creates_bulk_candidates_queues_invites_and_removes_the_files(auth, client, folder, clock, user):
    agent = make_agent(deadline_days=5)
    _known(agent)
    upload(client, agent, {"people.csv": csv_bytes(MIXED), "cv.pdf": pdf_bytes(["Jane Doe", "jane@example.com"])})
    batch = only_batch()
    assert (folder / batch.folder / "files").is_dir()
    response = client.post(f"/candidates/uploads/{batch.id}/confirm", {"channel": "email", "invite": "1"})
    assert response.status_code == 303
    batch = only_batch()
    assert (batch.status, batch.created_count, batch.duplicate_count, batch.error_count, batch.total_rows) == (
        "done", 3, 2, 3, 8)
    assert batch.folder is None and not any(folder.iterdir())
    made = db.session.scalars(select(Candidate).where(Candidate.import_batch_id == batch.id)
                              .order_by(Candidate.id)).all()
    assert [(c.name, c.email, c.source, c.stage, c.created_by_id) for c in made] == [
        ("Ada Lovelace", "ada@example.com", "bulk", "added", user.id),
        ("Grace Hopper", "grace@example.com", "bulk", "added", user.id),
        ("Jane Doe", "jane@example.com", "bulk", "added", user.id)]
    # The phone gave Ada her zone, as when adding by hand; deadline: the default, counted from the invite.
    assert made[0].timezone == "Europe/London" and made[0].deadline_follows_invite
    invites = db.session.scalars(select(Message).where(Message.candidate_id.in_([c.id for c in made]))).all()
    assert {(m.kind, m.step, m.channel, m.status) for m in invites} == {("invite", 1, "email", MessageStatus.SCHEDULED)}
    # The timing rules: within 09:00-18:00 candidate-local on an initial send day.
    ada_invite = next(m for m in invites if m.candidate_id == made[0].id)
    assert ada_invite.scheduled_for == NOW  # 10:00 in London on a Tuesday
    assert db.session.scalar(select(func.count()).select_from(Event).where(
        Event.type == "added", Event.candidate_id.in_([c.id for c in made]))) == 3
    # The counts the lists read include them, once.
    assert tally.count(db.session, agent.id, source="bulk") == 3
    assert tally.count(db.session, agent.id) == 4
    page = client.get(f"/candidates/uploads/{batch.id}").get_data(as_text=True)
    assert "3</strong> created" in page and "Rita Recruiter" in page and "Undo this upload" in page


def test_a_second_confirm_creates_nothing_twice(auth, client, folder, clock):
    agent = make_agent()
    upload(client, agent, {"people.csv": csv_bytes(MIXED)})
    batch = only_batch()
    first = client.post(f"/candidates/uploads/{batch.id}/confirm", {"channel": "email", "invite": "1"})
    second = client.post(f"/candidates/uploads/{batch.id}/confirm", {"channel": "email", "invite": "1"})
    assert first.status_code == second.status_code == 303
    assert db.session.scalar(select(func.count()).select_from(Candidate)) == 3
    assert db.session.scalar(select(func.count()).select_from(Message)) == 3
    # Even when both got past the view's check (two workers): the claim lets one through.
    again = services.confirm(db.session, folder, only_batch(), {}, "email", True, NOW, None)
    assert not again.created_now
    assert db.session.scalar(select(func.count()).select_from(Candidate)) == 3
    follow = client.get(second.headers["Location"]).get_data(as_text=True)
    assert "already confirmed" in follow


def test_add_at_once_skips_the_review(auth, client, folder, clock):
    agent = make_agent()
    response = upload(client, agent, {"people.csv": csv_bytes(MIXED)}, mode="direct", channel="email")
    assert response.status_code == 303
    assert only_batch().status == "done"
    assert db.session.scalar(select(func.count()).select_from(Candidate)) == 3


def test_a_creating_batch_is_hidden_from_lists_counts_planner_and_dispatcher(app, auth, client, folder, clock,
                                                                              monkeypatch):
    """Rows land in several chunks; until the last, nobody sees them; a failure removes them all."""
    agent = make_agent()
    upload(client, agent, {"people.csv": csv_bytes([["Name", "Email"]] + [[f"P{i}", f"p{i}@example.com"]
                                                                           for i in range(7)])})
    batch = only_batch()
    seen = []
    real_chunk = services._create_chunk

    def chunk_then_look(work, *args, **kwargs):
        made = real_chunk(work, *args, **kwargs)
        work.commit()
        in_db = db.session.scalar(select(func.count()).select_from(Candidate))
        listed = candidates.list_candidates(db.session, candidates.ListFilters(agent_id=agent.id))
        searched = candidates.list_candidates(db.session, candidates.ListFilters(q="example.com"))
        due = followups._due_ids(db.session, NOW + timedelta(days=3), ["email"], 100)
        seen.append((in_db, listed.total, len(listed.rows), searched.total, tally.count(db.session, agent.id), due))
        db.session.rollback()
        if len(seen) == 3:
            raise RuntimeError("the disk is full")
        return made

    monkeypatch.setattr(services, "_create_chunk", chunk_then_look)
    with pytest.raises(RuntimeError):
        services.confirm(db.session, folder, batch, services.parse_mapping(batch.mapping), "email", True, NOW, None,
                         chunk=3, adapt=False)
    assert seen == [(3, 0, 0, 0, 0, []), (6, 0, 0, 0, 0, []), (7, 0, 0, 0, 0, [])]
    # All or nothing: nothing is left, the counts never moved, the batch can be confirmed again.
    assert db.session.scalar(select(func.count()).select_from(Candidate)) == 0
    assert db.session.scalar(select(func.count()).select_from(Message)) == 0
    assert db.session.scalar(select(func.count()).select_from(ImportRow)) == 0
    assert tally.count(db.session, agent.id) == 0
    batch = only_batch()
    assert batch.status == "review" and "nothing was added" in batch.note
    monkeypatch.setattr(services, "_create_chunk", real_chunk)
    services.confirm(db.session, folder, batch, services.parse_mapping(batch.mapping), "email", True, NOW, None,
                     chunk=3, adapt=False)
    listed = candidates.list_candidates(db.session, candidates.ListFilters(agent_id=agent.id))
    assert (listed.total, tally.count(db.session, agent.id)) == (7, 7)
    assert len(followups._due_ids(db.session, NOW + timedelta(days=3), ["email"], 100)) == 7


VICTIM = """
import sys, time
from milo_portal import create_app
from milo_portal.extensions import db
from milo_portal.imports import services
from tests.conftest import at

real = services._create_chunk
def slow(work, *args, **kwargs):
    made = real(work, *args, **kwargs)
    time.sleep(0.05)  # inside the chunk's transaction: the kill may land before its commit
    return made
services._create_chunk = slow
app = create_app()
with app.app_context():
    services.work_queued(db.session, services.import_root(), at("2026-11-24T10:00:00"), "victim", budget=None,
                         chunk=50, adapt=False)
"""


def _big_upload(client, agent, n: int) -> ImportBatch:
    rows = [["Name", "Email"]] + [[f"Person {i}", f"p{i}@example.com"] for i in range(n)]
    upload(client, agent, {"big.csv": csv_bytes(rows)})
    batch = only_batch()
    response = client.post(f"/candidates/uploads/{batch.id}/confirm", {"channel": "email", "invite": "1"})
    assert response.status_code == 303
    return only_batch()


def test_a_large_create_killed_midway_resumes_and_creates_and_invites_each_row_once(
        app, auth, client, database_url, folder, clock, team_settings):
    """SIGKILL a process creating a queued batch mid-way; a restarted `flask milo dispatch` finishes it."""
    import os
    import signal
    import subprocess
    import sys
    import time as wall

    from tests.servers import SmtpSink

    root = Path(__file__).resolve().parent.parent
    agent = make_agent()
    batch = _big_upload(client, agent, 1500)
    assert (batch.status, batch.rows_done) == ("creating", 0)  # queued: the request created nothing
    assert db.session.scalar(select(func.count()).select_from(Candidate)) == 0
    sink = SmtpSink().start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MILO_", "MAIL_", "TWILIO_"))}
    env.update(MILO_DATABASE_URL=database_url, MILO_SECRET_KEY="x" * 32, MILO_SCHEDULER="0",
               MILO_PUBLIC_BASE_URL="https://jobs.example.test", MAIL_SERVER="127.0.0.1", MAIL_PORT=str(sink.port),
               MILO_IMPORT_DIR=str(folder), PYTHONUNBUFFERED="1")
    try:
        victim = subprocess.Popen([sys.executable, "-c", VICTIM], cwd=root, env=env)
        deadline = wall.monotonic() + 120
        while wall.monotonic() < deadline:
            db.session.expire_all()
            if only_batch().rows_done >= 400:
                break
            db.session.rollback()
            wall.sleep(0.02)
        db.session.rollback()
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
        stopped = only_batch()
        db.session.rollback()
        assert stopped.status == "creating" and 400 <= stopped.rows_done < 1500, stopped.rows_done
        assert stopped.worker == "victim"
        landed = db.session.scalar(select(func.count()).select_from(Candidate))
        assert landed == stopped.rows_done  # each chunk's rows and its progress landed together
        db.session.rollback()
        # Restarted: while the dead worker's hold lasts nobody takes the batch; once it ran out, one does.
        for when, expected in (("2026-11-24T10:01:00+00:00", "creating"), ("2026-11-24T10:03:00+00:00", "done")):
            out = subprocess.run([sys.executable, "-m", "flask", "--app", "milo_portal", "milo", "dispatch", "--at",
                                  when], cwd=root, env=env, capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, out.stdout + out.stderr
            db.session.expire_all()
            assert only_batch().status == expected
            db.session.rollback()
        for minute in (4, 5, 6):  # a tick sends up to its batch size: the next ones send the rest
            if len(sink.messages) >= 1500:
                break
            subprocess.run([sys.executable, "-m", "flask", "--app", "milo_portal", "milo", "dispatch", "--at",
                            f"2026-11-24T10:0{minute}:00+00:00"], cwd=root, env=env, timeout=300, check=True,
                           capture_output=True)
        sink.wait_for(1500)
        wall.sleep(0.3)  # a second send of anyone would arrive now
        received = Counter(m.rcpt_tos[0] for m in sink.messages)
    finally:
        sink.stop()
    assert len(received) == 1500 and set(received.values()) == {1}
    db.session.expire_all()
    emails = [e for (e,) in db.session.execute(select(Candidate.email))]
    assert len(emails) == len(set(emails)) == 1500
    assert db.session.scalar(select(func.count()).select_from(Message)) == 1500
    assert db.session.scalar(select(func.count()).select_from(ImportRow)) == 1500
    done = only_batch()
    assert (done.created_count, done.rows_done, done.worker, done.folder) == (1500, 1500, None, None)
    assert tally.count(db.session, agent.id) == 1500


def test_a_large_batch_is_queued_and_its_page_polls_until_done(app, auth, client, folder, clock):
    """Confirm returns at once; the page shows the progress and polls; a tick finishes it."""
    agent = make_agent()
    batch = _big_upload(client, agent, 1200)
    page = client.get(f"/candidates/uploads/{batch.id}").get_data(as_text=True)
    assert 'hx-trigger="every 2s"' in page and 'http-equiv="refresh"' in page
    assert "Waiting to start adding 1,200 rows" in page
    services.work_queued(db.session, folder, NOW, "tick", budget=0.0001, chunk=100, adapt=False)
    part = client.get(f"/candidates/uploads/{batch.id}?progress=1", headers={"HX-Request": "true"})
    assert "Adding 100 of 1,200" in part.get_data(as_text=True) and 'hx-trigger="every 2s"' in part.get_data(True)
    assert candidates.list_candidates(db.session, candidates.ListFilters(agent_id=agent.id)).total == 0
    db.session.rollback()
    assert services.work_queued(db.session, folder, NOW, "tick", budget=None) == 1
    done = client.get(f"/candidates/uploads/{batch.id}?progress=1", headers={"HX-Request": "true"})
    assert done.headers.get("HX-Refresh") == "true"
    page = client.get(f"/candidates/uploads/{batch.id}").get_data(as_text=True)
    assert "every 2s" not in page and "1,200</strong> created" in page
    assert candidates.list_candidates(db.session, candidates.ListFilters(agent_id=agent.id)).total == 1200


def _add_by_hand(agent, email: str, when) -> None:
    contact = candidates.clean_contact(candidates.ContactData(name="By Hand", email=email), "US", "UTC")
    candidates.add_candidate(db.session, agent, contact, when + timedelta(days=7), when)
    db.session.commit()


def _report_rows(client, batch) -> dict[str, list[str]]:
    text = client.get(f"/candidates/uploads/{batch.id}/report.csv").get_data(as_text=True)
    return {row[0] + ":" + row[1]: row for row in csv.reader(io.StringIO(text))}


def test_a_person_added_by_hand_between_review_and_confirm_ends_a_duplicate(auth, client, folder, clock):
    """The review showed Grace as new; someone added her by hand before the confirm: no second Grace."""
    agent = make_agent()
    upload(client, agent, {"people.csv": csv_bytes(MIXED)})
    batch = only_batch()
    page = client.get(f"/candidates/uploads/{batch.id}").get_data(as_text=True)
    assert "Add 3 candidates and invite them" in page  # Ada, Grace and Known Person, as reviewed
    _add_by_hand(agent, "grace@example.com", NOW)
    client.post(f"/candidates/uploads/{batch.id}/confirm", {"channel": "email", "invite": "1"})
    done = only_batch()
    assert (done.status, done.created_count, done.duplicate_count) == ("done", 2, 2)
    assert db.session.scalar(select(func.count()).select_from(Candidate).where(
        Candidate.email == "grace@example.com")) == 1
    grace = _report_rows(client, done)["people.csv:3"]
    assert grace[2:4] == ["duplicate", "already a candidate of this interview (same e-mail)"]


def test_a_person_added_by_hand_while_a_large_batch_is_created_ends_a_duplicate(app, auth, client, folder, clock):
    """Added between two chunks of a queued batch: the later chunk still finds them, one candidate."""
    agent = make_agent()
    batch = _big_upload(client, agent, 1200)
    services.work_queued(db.session, folder, NOW, "tick", budget=0.0001, chunk=100, adapt=False)
    assert only_batch().rows_done == 100
    db.session.rollback()
    _add_by_hand(agent, "p700@example.com", NOW + timedelta(minutes=1))
    assert services.work_queued(db.session, folder, NOW + timedelta(minutes=1), "tick", budget=None) == 1
    done = only_batch()
    assert (done.status, done.created_count, done.duplicate_count) == ("done", 1199, 1)
    assert db.session.scalar(select(func.count()).select_from(Candidate).where(
        Candidate.email == "p700@example.com")) == 1
    assert _report_rows(client, done)["big.csv:702"][2] == "duplicate"


def test_a_resumed_batch_finds_rows_repeating_a_row_created_before_the_pause(app, auth, client, folder, clock):
    """Rows after the pause that repeat rows created before it are duplicates of those rows, not new."""
    agent = make_agent()
    rows = [["Name", "Email"]] + [[f"Person {i}", f"p{i}@example.com"] for i in range(1200)]
    rows[1100] = ["Person Again", "P5@example.com"]  # row 1101 repeats row 7 (p5)
    upload(client, agent, {"big.csv": csv_bytes(rows)})
    batch = only_batch()
    client.post(f"/candidates/uploads/{batch.id}/confirm", {"channel": "email", "invite": "1"})
    services.work_queued(db.session, folder, NOW, "tick", budget=0.0001, chunk=100, adapt=False)
    assert only_batch().rows_done == 100
    db.session.rollback()
    assert services.work_queued(db.session, folder, NOW, "tick", budget=None, chunk=100, adapt=False) == 1
    done = only_batch()
    assert (done.status, done.created_count, done.duplicate_count) == ("done", 1199, 1)
    assert db.session.scalar(select(func.count()).select_from(Candidate).where(
        Candidate.email == "p5@example.com")) == 1
    again = _report_rows(client, done)["big.csv:1101"]
    assert again[2:4] == ["duplicate", "same e-mail as row 7 of big.csv"]


def test_undo_while_a_large_batch_is_being_created_stops_it_and_removes_what_landed(app, auth, client, folder,
                                                                                  clock):
    agent = make_agent()
    batch = _big_upload(client, agent, 1200)
    services.work_queued(db.session, folder, NOW, "tick", budget=0.0001, chunk=300, adapt=False)
    assert db.session.scalar(select(func.count()).select_from(Candidate)) == 300
    db.session.rollback()
    response = client.post(f"/candidates/uploads/{batch.id}/undo")
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Stopped while adding. Removed 300 candidates." in page
    db.session.expire_all()
    assert db.session.scalar(select(func.count()).select_from(Candidate)) == 0
    assert db.session.scalar(select(func.count()).select_from(Message)) == 0
    assert (only_batch().status, only_batch().removed_count) == ("undone", 300)
    assert services.work_queued(db.session, folder, NOW + timedelta(hours=1), "tick") == 0  # nothing resumes it
    assert tally.count(db.session, agent.id) == 0
    report = client.get(f"/candidates/uploads/{batch.id}/report.csv").get_data(as_text=True)
    assert report.count("removed by Undo") == 300 and ",created," not in report


def test_undo_removes_those_not_contacted_and_keeps_the_others_saying_why(auth, client, folder, clock):
    agent = make_agent()
    upload(client, agent, {"people.csv": csv_bytes([["Name", "Email"], ["A", "a@example.com"], ["B", "b@example.com"],
                                                    ["C", "c@example.com"]])})
    batch = only_batch()
    client.post(f"/candidates/uploads/{batch.id}/confirm", {"channel": "email", "invite": "1"})
    a, b, c = db.session.scalars(select(Candidate).order_by(Candidate.id)).all()
    sent = db.session.scalars(select(Message).where(Message.candidate_id == a.id)).one()
    sent.status, sent.sent_at = MessageStatus.SENT, NOW
    db.session.commit()
    assert tally.count(db.session, agent.id) == 3
    response = client.post(f"/candidates/uploads/{batch.id}/undo")
    assert response.status_code == 303
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Removed 2 candidates; kept 1 who were already contacted: invite already sent (1)." in page
    db.session.expire_all()
    assert [x.email for x in db.session.scalars(select(Candidate).where(Candidate.erased_at.is_(None)))] \
        == ["a@example.com"]
    assert [m.status for m in db.session.scalars(select(Message).order_by(Message.id))] == ["sent", "cancelled",
                                                                                           "cancelled"]
    assert tally.count(db.session, agent.id) == 1
    assert candidates.list_candidates(db.session, candidates.ListFilters(agent_id=agent.id)).total == 1
    batch = only_batch()
    assert (batch.status, batch.removed_count, batch.kept_count) == ("undone", 2, 1)
    again = client.post(f"/candidates/uploads/{batch.id}/undo")
    assert "already undone" in client.get(again.headers["Location"]).get_data(as_text=True)


def test_ids_of_candidates_removed_by_undo_are_never_given_to_someone_else(auth, client, folder, clock):
    """Defect: Undo deleted rows, and SQLite (no AUTOINCREMENT) handed their ids to the next candidates."""
    agent = make_agent()
    upload(client, agent, {"a.csv": csv_bytes([["Name", "Email"], ["A", "a@example.com"], ["B", "b@example.com"]])})
    batch = only_batch()
    client.post(f"/candidates/uploads/{batch.id}/confirm", {"channel": "email", "invite": "1"})
    first_ids = set(db.session.scalars(select(Candidate.id)))
    client.post(f"/candidates/uploads/{batch.id}/undo")
    db.session.expire_all()
    assert db.session.execute(select(ImportBatch.status)).scalar() == "undone"
    contact = candidates.clean_contact(candidates.ContactData(name="Someone else", email="c@example.com"), "US", "UTC")
    later, _ = candidates.add_candidate(db.session, agent, contact, NOW + timedelta(days=7), NOW)
    db.session.commit()
    assert later.id not in first_ids
    assert candidates.list_candidates(db.session, candidates.ListFilters(agent_id=agent.id)).total == 1


def test_the_review_lets_the_recruiter_correct_a_resumes_name_email_and_phone(auth, client, folder, clock):
    """Works without JavaScript: the Save button posts the review form; the correction is what gets created."""
    agent = make_agent()
    upload(client, agent, {"cv.txt": b"Curriculum Vitae\nJob seeker profile\nreach me: nobody@example\n"})
    batch = only_batch()
    page = client.get(f"/candidates/uploads/{batch.id}").get_data(as_text=True)
    assert 'name="fix-0-name"' in page and "Add 0" not in page and "invalid" in page
    response = client.post(f"/candidates/uploads/{batch.id}/correct",
                           {"fix": "0", "fix-0-name": "Ana  Souza", "fix-0-email": "ana@example.com", "fix-0-phone": "",
                            "channel": "email", "invite": "1"})
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Add 1 candidate and invite them" in page and "corrected in the review" in page
    client.post(f"/candidates/uploads/{batch.id}/confirm", {"channel": "email", "invite": "1"})
    person = db.session.scalars(select(Candidate)).one()
    assert (person.name, person.email) == ("Ana Souza", "ana@example.com")
    wrong = client.post(f"/candidates/uploads/{batch.id}/correct", {"fix": "7"})
    assert wrong.status_code == 303  # no longer in review: back to the batch page


def test_the_report_says_what_undo_did_to_each_created_row(auth, client, folder, clock):
    """Defect: the report still said "created" for rows Undo had removed."""
    agent = make_agent()
    upload(client, agent, {"a.csv": csv_bytes([["Name", "Email"], ["A", "a@example.com"], ["B", "b@example.com"],
                                               ["Bad", "nope"]])})
    batch = only_batch()
    client.post(f"/candidates/uploads/{batch.id}/confirm", {"channel": "email", "invite": "1"})
    a = db.session.scalars(select(Candidate).where(Candidate.email == "a@example.com")).one()
    sent = db.session.scalars(select(Message).where(Message.candidate_id == a.id)).one()
    sent.status, sent.sent_at = MessageStatus.SENT, NOW
    db.session.commit()
    client.post(f"/candidates/uploads/{batch.id}/undo")
    report = list(csv.reader(io.StringIO(client.get(f"/candidates/uploads/{batch.id}/report.csv").get_data(True))))
    assert [(r[1], r[2]) for r in report[1:]] == [("2", "kept: already contacted"), ("3", "removed by Undo"),
                                                 ("4", "invalid")]


def test_the_report_lists_every_row_and_neutralises_formula_cells(auth, client, folder, clock):
    agent = make_agent()
    rows = [["Name", "Email", "Ref"], ["=HYPERLINK(\"http://x\")", "a@example.com", "+1"],
            ["@SUM(A1)", "b@example.com", "-2"], ["Tab", "bad", "\tx"]]
    upload(client, agent, {"evil.csv": csv_bytes(rows)})
    batch = only_batch()
    client.post(f"/candidates/uploads/{batch.id}/confirm", {"channel": "email", "invite": "1"})
    response = client.get(f"/candidates/uploads/{batch.id}/report.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    report = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert report[0] == services.REPORT_HEADER
    assert [(r[1], r[2], r[4], r[7]) for r in report[1:]] == [
        ("2", "created", "'=HYPERLINK(\"http://x\")", "'+1"),
        ("3", "created", "'@SUM(A1)", "'-2"),
        ("4", "invalid", "Tab", "x")]  # a tab at the start of a cell is whitespace the reader trims
    assert report[3][3] == "bad e-mail “bad”"


def test_limits_and_bad_files_give_clear_messages_and_keep_nothing(app, auth, client, folder, clock, monkeypatch):
    agent = make_agent()
    from milo_portal.imports import parsers

    monkeypatch.setattr(parsers, "MAX_FILES", 2)
    response = upload(client, agent, {"a.csv": b"x", "b.csv": b"y", "c.csv": b"z"})
    assert response.status_code == 422 and "Upload at most 2 files" in response.get_data(as_text=True)
    monkeypatch.setattr(parsers, "MAX_ROWS", 3)
    response = upload(client, agent, {"a.csv": csv_bytes([["Email"]] + [[f"{i}@example.com"] for i in range(4)])},
                      htmx=True)
    body = response.get_data(as_text=True)
    assert response.status_code == 422 and "more than 3 rows" in body and "<html" not in body
    response = upload(client, agent, {})
    assert response.status_code == 422 and "Choose at least one file" in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(ImportBatch)) == 0
    assert not folder.exists() or not any(folder.iterdir())


def test_an_upload_over_the_size_limit_gets_a_friendly_413(app, auth, client, folder):
    # (Under the 500 KB past which Werkzeug's test client spools the body to a file it never closes.)
    app.config["MAX_CONTENT_LENGTH"] = 100 * 1024
    agent = make_agent()
    big = {"big.csv": b"Email\r\n" + b"a@example.com\r\n" * 20_000}
    fragment = upload(client, agent, big, htmx=True)
    body = fragment.get_data(as_text=True)
    assert fragment.status_code == 413 and "larger than the 100 KB" in body and "<html" not in body
    page = upload(client, agent, big)
    text = page.get_data(as_text=True)
    assert page.status_code == 413 and "larger than the 100 KB" in text and "<html" in text and "Drop files here" in text


def test_unreadable_files_become_invalid_rows_with_the_reason(auth, client, folder, clock):
    agent = make_agent()
    upload(client, agent, {"image.csv": b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "empty.csv": b"",
                           "cvs.zip": zip_bytes({"locked.pdf": pdf_bytes(["Jane"], password="pw"),
                                                 "jane.pdf": pdf_bytes(["Jane Doe", "jane@example.com"])})})
    batch = only_batch()
    page = client.get(f"/candidates/uploads/{batch.id}").get_data(as_text=True)
    assert "image.csv is not a CSV file: it looks like a PNG image." in page
    assert "empty.csv is empty." in page
    assert "cvs.zip/locked.pdf is an encrypted PDF" in page
    assert "Read: name on page 1, line 1; e-mail on page 1, line 2" in page
    assert "Add 1 candidate and invite them" in page


def test_the_no_javascript_path_uploads_reviews_and_confirms(auth, client, folder, clock):
    agent = make_agent()
    form = client.get(f"/candidates/uploads/new?agent_id={agent.id}").get_data(as_text=True)
    assert 'enctype="multipart/form-data"' in form and 'type="file"' in form
    response = upload(client, agent, {"people.csv": csv_bytes(MIXED)})
    assert response.status_code == 303
    review_url = response.headers["Location"]
    batch = only_batch()
    # The filter and "check again" buttons post the whole form back and get the full page.
    page = client.post(f"/candidates/uploads/{batch.id}/review", {"show": "duplicate", "map-0-0": "name",
                                                                  "map-0-1": "email", "map-0-2": "phone",
                                                                  "channel": "email", "invite": "1"})
    text = page.get_data(as_text=True)
    assert "<html" in text and "Ada Again" in text and "Bad Mail" not in text
    done = client.post(f"/candidates/uploads/{batch.id}/confirm", {"map-0-0": "name", "map-0-1": "email",
                                                                   "map-0-2": "phone", "channel": "email",
                                                                   "invite": "1"})
    assert done.status_code == 303 and done.headers["Location"] == review_url
    assert "Upload " in client.get(review_url).get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(Candidate)) == 3


def test_the_menu_and_the_candidates_page_lead_to_bulk_upload(auth, client, folder):
    agent = make_agent()
    body = client.get(f"/agents/{agent.id}").get_data(as_text=True)
    assert f'href="/candidates/uploads/new?agent_id={agent.id}">Bulk upload</a>' in body
    assert 'href="/candidates/uploads" class="secondary">Uploads</a>' in client.get("/candidates").get_data(as_text=True)
    old = client.get(f"/candidates/add/bulk?agent_id={agent.id}")
    assert old.status_code == 302 and old.headers["Location"].endswith(f"/candidates/uploads/new?agent_id={agent.id}")
    page = client.get(f"/candidates/uploads/new?agent_id={agent.id}").get_data(as_text=True)
    assert f'<option value="{agent.id}" selected>' in page


@pytest.mark.parametrize("path", ["confirm", "cancel", "undo", "review", "sheet"])
def test_state_changes_refuse_get(auth, client, folder, path):
    agent = make_agent()
    batch = ImportBatch(agent_id=agent.id, status="review", filenames="x.csv", created_at=NOW)
    db.session.add(batch)
    db.session.commit()
    assert client.get(f"/candidates/uploads/{batch.id}/{path}").status_code == 405


def test_cancel_drops_the_batch_and_its_files(auth, client, folder, clock):
    agent = make_agent()
    upload(client, agent, {"people.csv": csv_bytes(MIXED)})
    batch_id = only_batch().id
    assert client.post(f"/candidates/uploads/{batch_id}/cancel").status_code == 303
    assert db.session.scalar(select(func.count()).select_from(ImportBatch)) == 0
    assert not any(folder.iterdir())
    assert client.get(f"/candidates/uploads/{batch_id}").status_code == 404


def test_files_never_confirmed_are_removed_after_a_day(auth, client, folder, clock):
    agent = make_agent()
    upload(client, agent, {"people.csv": csv_bytes(MIXED)})
    batch = only_batch()
    services.remove_abandoned(db.session, folder, NOW + timedelta(hours=23))
    assert only_batch().folder and any(folder.iterdir())
    services.remove_abandoned(db.session, folder, NOW + timedelta(days=1, minutes=1))
    assert db.session.scalar(select(func.count()).select_from(ImportBatch)) == 0
    assert not any(folder.iterdir())
    assert json.loads(batch.mapping)["0"]["columns"] == ["name", "email", "phone"]


def test_an_upload_and_its_undo_are_in_the_audit_log_once(auth, client, folder, clock):
    from milo_portal.models import AuditEntry

    agent = make_agent()
    upload(client, agent, {"people.csv": csv_bytes(MIXED)})
    batch = only_batch()
    client.post(f"/candidates/uploads/{batch.id}/confirm", {"channel": "email", "invite": "1"})
    client.post(f"/candidates/uploads/{batch.id}/confirm", {"channel": "email", "invite": "1"})  # a second click
    client.post(f"/candidates/uploads/{batch.id}/undo")
    entries = db.session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    bulk = [e for e in entries if e.kind.startswith("bulk")]
    assert [e.kind for e in bulk] == ["bulk_upload", "bulk_undo"]
    assert all(e.actor.startswith("Rita Recruiter") for e in bulk)
    assert f"upload {batch.id}: 3 created, 1 duplicate, 3 invalid" in bulk[0].detail  # no agent candidate here
