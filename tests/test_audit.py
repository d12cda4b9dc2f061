"""The audit log: what is recorded (with who, when and from where), the page's filters,
its CSV export and how long entries are kept."""
from __future__ import annotations

import csv
import io
from datetime import timedelta

from milo_portal import audit
from milo_portal.audit.services import purge
from milo_portal.extensions import db
from milo_portal.models import AuditEntry, Candidate, Stage
from tests.conftest import PASSWORD, Auth, at, make_agent, make_user

ADDRESS = {"REMOTE_ADDR": "192.0.2.44"}


def _entries(kind=None):
    db.session.expire_all()
    query = db.session.query(AuditEntry).order_by(AuditEntry.id)
    return query.filter_by(kind=kind).all() if kind else query.all()


def test_logins_and_failed_logins_are_recorded_with_the_address(client, user):
    client.environ_base.update(ADDRESS)
    assert Auth(client).login(password="wrong password").status_code == 200
    assert Auth(client).login().status_code == 302
    failed, = _entries("login_failed")
    assert failed.address == "192.0.2.44" and failed.actor == "system" and "rita@example.com" in failed.detail
    ok, = _entries("login")
    assert (ok.actor_id, ok.address) == (user.id, "192.0.2.44")
    assert ok.actor == "Rita Recruiter <rita@example.com>"


def test_team_changes_templates_settings_and_candidate_deletions_and_exports_are_recorded(client, auth, user):
    client.environ_base.update(ADDRESS)
    assert client.post("/team", {"name": "Tom Teammate", "email": "tom@example.com", "password": PASSWORD}).status_code == 302
    tom = db.session.query(type(user)).filter_by(email="tom@example.com").one()
    client.post(f"/team/{tom.id}/active", {"active": "0"})
    client.post(f"/team/{tom.id}/password", {"password": "another-long-password"})
    client.post("/templates/invite/email/A", {"subject": "Your interview for {{ role }}", "body": "Hi {{ candidate.first_name }}: {{ link }}"})
    client.post("/settings", {"company_name": "Acme Two", "sender_name": "", "default_country": "US",
                              "default_timezone": "UTC"})
    agent = make_agent()
    person = Candidate(agent_id=agent.id, name="Eve Example", email="eve@example.com", stage=Stage.ADDED)
    db.session.add(person)
    db.session.commit()
    assert client.get(f"/candidates/export.csv?agent_id={agent.id}&q=Eve").status_code == 200
    assert client.post(f"/candidates/{person.id}/delete").status_code == 302
    kinds = [e.kind for e in _entries() if e.kind != "login"]
    assert kinds == ["team_added", "team_active", "team_password", "template_saved", "settings_changed",
                     "candidate_export", "candidate_deleted"]
    by_kind = {e.kind: e for e in _entries()}
    assert "tom@example.com" in by_kind["team_added"].detail
    assert "deactivated" in by_kind["team_active"].detail
    assert "another-long-password" not in " ".join(e.detail for e in _entries())
    assert "company_name 'Acme' → 'Acme Two'" in by_kind["settings_changed"].detail or "Acme Two" in by_kind["settings_changed"].detail
    # The export names its filters but not the search text, which may be a person's name.
    assert f"interview {agent.id}" in by_kind["candidate_export"].detail and "Eve" not in by_kind["candidate_export"].detail
    assert by_kind["candidate_deleted"].detail.startswith(f"candidate {person.id}")
    assert all(e.actor_id == user.id and e.address == "192.0.2.44" for e in _entries() if e.kind != "login")


def test_a_template_restore_is_recorded(client, auth):
    client.post("/templates/invite/email/A", {"subject": "First {{ role }}", "body": "One {{ link }}"})
    client.post("/templates/invite/email/A", {"subject": "Second {{ role }}", "body": "Two {{ link }}"})
    from milo_portal.models import TemplateVersion

    first = db.session.query(TemplateVersion).filter_by(subject="First {{ role }}").one()
    response = client.post(f"/templates/invite/email/A/restore/{first.id}")
    assert response.status_code == 302
    restored, = _entries("template_restored")
    assert f"version {first.number} restored" in restored.detail


def test_other_areas_record_through_one_function_with_any_actor(app):
    """The contract the bulk upload and API areas use: record(session, actor, kind, detail, ...)."""
    when = at("2026-11-30T10:00:00")
    audit.record(db.session, "API key ci-sync", "bulk_upload", "batch 7: 120 created", now=when)
    audit.record(db.session, None, "api_key", "key ci-sync revoked\r\nforged line", address="198.51.100.7", now=when)
    db.session.commit()
    upload, key = _entries()
    assert (upload.actor, upload.kind, upload.at, upload.actor_id) == ("API key ci-sync", "bulk_upload", when, None)
    assert key.actor == "system" and key.detail == "key ci-sync revoked forged line"  # one line, always


def _seed_log(user):
    other = make_user("sam@example.com", "Sam Second")
    base = at("2026-11-10T12:00:00")
    for i, (actor, kind) in enumerate([(user, "login"), (other, "login"), (user, "candidate_deleted"),
                                       (other, "template_saved"), (user, "login")]):
        audit.record(db.session, actor, kind, f"entry {i}", now=base + timedelta(days=i))
    audit.record(db.session, user, "settings_changed", "=HYPERLINK(\"http://evil\")", now=base + timedelta(days=6))
    db.session.commit()
    return other


def test_the_audit_page_filters_by_person_kind_and_day(client, auth, user):
    other = _seed_log(user)
    page = client.get("/audit").get_data(as_text=True)
    assert all(f"entry {i}" in page for i in range(5))
    page = client.get(f"/audit?person={other.id}").get_data(as_text=True)
    assert "entry 1" in page and "entry 3" in page and "entry 0" not in page
    page = client.get("/audit?kind=login").get_data(as_text=True)
    assert "entry 0" in page and "entry 4" in page and "entry 2" not in page
    page = client.get("/audit?since=2026-11-11&until=2026-11-12").get_data(as_text=True)
    assert "entry 1" in page and "entry 2" in page and "entry 0" not in page and "entry 3" not in page
    # Nonsense in the filters is ignored, never an error.
    assert client.get("/audit?person=abc&since=2026-13-45&before=-1&kind=" + "x" * 500).status_code == 200


def test_the_audit_csv_exports_the_filtered_entries_with_formulas_neutralised(client, auth, user):
    _seed_log(user)
    response = client.get("/audit.csv?kind=settings_changed")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0] == ["id", "at (UTC)", "person", "kind", "detail", "address"]
    assert len(rows) == 2 and rows[1][4].startswith("'=HYPERLINK")


def test_the_audit_log_needs_a_login(client):
    for path in ("/audit", "/audit.csv"):
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_entries_older_than_the_audit_retention_are_purged_in_chunks(app, monkeypatch):
    from milo_portal.audit import services

    monkeypatch.setattr(services, "PURGE_CHUNK", 3)
    when = at("2026-11-30T10:00:00")
    for days in (800, 760, 740, 731, 729, 10):
        audit.record(db.session, None, "login", f"{days} days ago", now=when - timedelta(days=days))
    db.session.commit()
    assert purge(db.session, when, 730) == 4
    assert [e.detail for e in _entries()] == ["729 days ago", "10 days ago"]
    assert purge(db.session, when, 730) == 0

