"""The candidates list at scale: keyset pages, maintained counts and indexed search.

Timings live in bench/candidates_list.py; these tests prove the rows, the totals and the
shape of the queries (no recount of the table, no OFFSET) on SQLite and PostgreSQL.
"""
from __future__ import annotations

import html
import re
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, func, insert, select, text

from milo_portal.candidates import services, stages, tally
from milo_portal.clock import now
from milo_portal.extensions import db
from milo_portal.models import Candidate, CandidateCount, Stage
from tests.conftest import at, make_agent
from tests.test_list_queries import _crowd, _link

def _expected(people, sort: str, desc: bool) -> list[int]:
    """The list's order: rows with a value by (value, id), then empty ones by id; "nulls last"."""
    key = services.SORTS[sort].key
    valued = sorted((p for p in people if getattr(p, key) is not None),
                    key=lambda p: (getattr(p, key), p.id), reverse=desc)
    empty = sorted((p for p in people if getattr(p, key) is None), key=lambda p: p.id, reverse=desc)
    return [p.id for p in valued + empty]


def _pages(filters: services.ListFilters) -> tuple[list[list[int]], list[list[int]], int | None]:
    """Every page going forward from the first, every page going back from the last, and the total."""
    forward, page = [], services.list_candidates(db.session, filters)
    total = page.total
    while True:
        forward.append([c.id for c in page.rows])
        if page.after is None:
            break
        page = services.list_candidates(db.session, replace(filters, after=page.after))
    backward, page = [], services.list_candidates(db.session, replace(filters, last=True))
    while True:
        backward.insert(0, [c.id for c in page.rows])
        if page.before is None:
            break
        page = services.list_candidates(db.session, replace(filters, before=page.before))
    return forward, backward, total


PLANS = {
    # name: (filters, read through the filter's index?, SEARCH_COUNT_CAP, which candidates match)
    "all, walking the sort's index": (dict(), False, 5_000, lambda p, one: True),
    "one agent, through the filter's index": (dict(agent="one"), True, 5_000, lambda p, one: p.agent_id == one.id),
    "one agent, walking the sort's index": (dict(agent="one"), False, 5_000, lambda p, one: p.agent_id == one.id),
    "a stage and a channel, through the filter's index": (
        dict(stage=Stage.ADDED, channel="sms"), True, 5_000, lambda p, one: p.stage == Stage.ADDED and p.channel == "sms"),
    "a stage and a channel, walking": (dict(stage=Stage.ADDED, channel="sms"), False, 5_000,
                                       lambda p, one: p.stage == Stage.ADDED and p.channel == "sms"),
    "a search, through the search index": (dict(q="ann"), False, 5_000, lambda p, one: (p.name or "").startswith("ann")),
    "a search and an agent, through the search index": (
        dict(q="ann", agent="one"), False, 5_000, lambda p, one: (p.name or "").startswith("ann") and p.agent_id == one.id),
    "a search, walking the sort's index": (dict(q="ann"), False, 0, lambda p, one: (p.name or "").startswith("ann")),
}


@pytest.mark.parametrize("plan", list(PLANS))
@pytest.mark.parametrize("sort", list(services.SORTS))
@pytest.mark.parametrize("desc", [True, False], ids=["desc", "asc"])
def test_pages_hold_exactly_the_right_rows_in_order_for_every_sort_and_plan(app, monkeypatch, plan, sort, desc):
    """Next pages from the first and previous pages from the last give every matching row
    once, in the sort's order with ties broken by id and empty values last, however read."""
    one, _two, people = _crowd()
    given, through_filter, cap, matches = PLANS[plan]
    monkeypatch.setattr(services, "_read_through_filter", lambda *counts: through_filter)
    monkeypatch.setattr(services, "SEARCH_COUNT_CAP", cap)
    chosen, choose = set(), services._plan
    monkeypatch.setattr(services, "_plan", lambda *args: (made := choose(*args), chosen.add(made[0]))[0])
    filters = services.ListFilters(agent_id=one.id if given.get("agent") else None, stage=given.get("stage"),
                                   channel=given.get("channel"), q=given.get("q", ""), sort=sort, desc=desc)
    expected = _expected([p for p in people if matches(p, one)], sort, desc)
    assert len(expected) > services.PAGE_SIZE or plan.startswith(("a stage", "a search"))
    forward, backward, total = _pages(filters)
    assert chosen == {services.WALK if "walking" in plan else services.SEARCH if "search index" in plan
                      else services.FILTER}
    assert [i for page in forward for i in page] == expected
    assert [i for page in backward for i in page] == expected
    assert all(len(page) == services.PAGE_SIZE for page in forward[:-1])
    if total is not None:
        assert total == len(expected)
        assert backward == forward  # the last page holds the remainder: the same pages both ways
    else:
        assert cap == 0  # only an uncounted (many-match) search has no total


def test_the_list_pages_by_links_that_keep_filters_and_say_which_page(auth, client):
    one, _two, people = _crowd(160)
    mine = [p for p in people if p.agent_id == one.id and p.source == "bulk"]
    assert len(mine) == 53
    body = client.get(f"/candidates?agent_id={one.id}&sort=name&dir=asc&source=bulk").get_data(as_text=True)
    assert "53 candidates" in body and "Page 1 of 2" in body and "« First" not in body
    link = _link(body, "next")
    assert f"agent_id={one.id}" in link and "sort=name" in link and "dir=asc" in link and "source=bulk" in link
    page2 = client.get(_link(body, "next")).get_data(as_text=True)
    assert "Page 2 of 2" in page2 and page2.count('name="ids"') == 3 and "Next →" not in page2
    back = client.get(_link(page2, "prev")).get_data(as_text=True)
    assert "Page 1 of 2" in back and back.count('name="ids"') == 50
    last = client.get(_link(body, None, "Last »")).get_data(as_text=True)
    assert "Page 2 of 2" in last and last.count('name="ids"') == 3
    shown = re.findall(r'name="ids" value="(\d+)"', back + last)
    assert [int(i) for i in shown] == _expected(mine, "name", False)
    # A bulk action from page 2 comes back to page 2.
    form_action = html.unescape(re.search(r'<form method="post" action="([^"]+)" class="bulk-form"', page2).group(1))
    assert "after=" in form_action and "page=2" in form_action


def test_go_to_date_starts_a_date_sorted_list_at_that_day(auth, client, user):
    agent = make_agent()
    days = [at(f"2026-10-{d:02d}T12:00:00") for d in range(1, 29)]
    db.session.add_all([Candidate(agent_id=agent.id, name=f"d{i}", email=f"d{i}.{k}@example.com", created_at=day)
                        for i, day in enumerate(days) for k in range(3)])
    db.session.commit()
    body = client.get("/candidates?sort=added&dir=desc&from=2026-10-10").get_data(as_text=True)
    first = re.search(r'name="ids" value="(\d+)"', body).group(1)
    assert db.session.get(Candidate, int(first)).created_at == days[9]
    body = client.get("/candidates?sort=added&dir=asc&from=2026-10-10").get_data(as_text=True)
    first = re.search(r'name="ids" value="(\d+)"', body).group(1)
    assert db.session.get(Candidate, int(first)).created_at == days[9]
    assert "Go to date" in client.get("/candidates?sort=added").get_data(as_text=True)
    # Not a date: the first page, not an error.
    assert client.get("/candidates?from=yesterday").status_code == 200


@pytest.mark.parametrize("token", ["garbage", "eyJ9", "W251bGwsIm5vdCBhbiBpZCJd", "x" * 400])
def test_a_broken_cursor_shows_the_first_page(auth, client, token):
    _crowd(60)
    for param in ("after", "before"):
        response = client.get(f"/candidates?{param}={token}")
        assert response.status_code == 200 and "Page 1 of 2" in response.get_data(as_text=True)


# --- search -------------------------------------------------------------------------------

def _searched(q: str, **filters) -> set[str]:
    page = services.list_candidates(db.session, services.ListFilters(q=q, **filters))
    return {c.email for c in page.rows}


@pytest.mark.parametrize("cap", [5_000, 0], ids=["through the index", "walking"])
def test_search_finds_names_emails_and_phone_digits_on_either_plan(app, monkeypatch, cap):
    monkeypatch.setattr(services, "SEARCH_COUNT_CAP", cap)
    agent = make_agent()
    db.session.add_all([
        Candidate(agent_id=agent.id, name="Grace Hopper", email="grace@navy.test", phone="+14155550100",
                  stage=Stage.STARTED),
        Candidate(agent_id=agent.id, name="Jonas MÜLLER", email="jm@firma.de", phone="+4915112345678"),
        Candidate(agent_id=agent.id, name="Ada Lovelace", email="countess@analytical.engine"),
        Candidate(agent_id=agent.id, name='Bobby "Tables" O\'Neil', email="bobby@school.test"),
    ])
    db.session.commit()
    assert _searched("hopper") == _searched("HOPP") == _searched("race hop") == {"grace@navy.test"}
    assert _searched("müller") == _searched("ÜL") == {"jm@firma.de"}  # case folded beyond ASCII
    assert _searched("analytical") == _searched("countess@") == {"countess@analytical.engine"}
    assert _searched("countess@analytical.engine") == _searched("@analytical.") == {"countess@analytical.engine"}
    assert _searched("countess@analytical.test") == _searched("grace@analytical") == set()
    assert _searched("555 0100") == _searched("(415) 555-0100") == {"grace@navy.test"}
    assert _searched("12345678") == {"jm@firma.de"}
    assert _searched("hopper", stage=Stage.ADDED) == set()
    assert _searched("hopper", stage=Stage.STARTED) == {"grace@navy.test"}
    assert _searched('"tables"') == _searched("o'neil") == {"bobby@school.test"}
    # Search syntax is text, never an operator: no error and no match.
    for q in ('x" OR "y', "NEAR(a b)", "a* OR b*", "{name}:x", "%", "_", "\\"):
        assert _searched(q) == set(), q
    assert _searched("zzz-nobody") == set()


def test_an_erased_candidate_is_never_found(app):
    agent = make_agent()
    c = Candidate(agent_id=agent.id, name="Erin Erased", email="erin@example.com", phone="+14155550199")
    db.session.add(c)
    db.session.commit()
    assert _searched("erin") == {"erin@example.com"}
    services.erase_candidate(db.session, c, now(), None)
    db.session.commit()
    assert _searched("erin") == _searched("5550199") == set()


def test_editing_contact_details_changes_what_the_search_finds(app):
    agent = make_agent()
    c = Candidate(agent_id=agent.id, name="Old Name", email="old@example.com")
    db.session.add(c)
    db.session.commit()
    contact = services.clean_contact(services.ContactData(name="New Name", email="new@example.com",
                                                          phone="+14155550123", channel="sms"), "US", "UTC")
    services.update_contact(db.session, c, contact, now())
    db.session.commit()
    assert _searched("old name") == set() and _searched("old@") == set()
    assert _searched("new name") == _searched("0123") == {"new@example.com"}


# --- counts ---------------------------------------------------------------------------------

def _recount() -> dict:
    rows = db.session.execute(
        select(Candidate.agent_id, Candidate.stage, Candidate.source, Candidate.channel, func.count())
        .where(Candidate.erased_at.is_(None))
        .group_by(Candidate.agent_id, Candidate.stage, Candidate.source, Candidate.channel))
    return {tuple(r[:4]): r[4] for r in rows}


def _maintained() -> dict:
    rows = db.session.execute(
        select(CandidateCount.agent_id, CandidateCount.stage, CandidateCount.source, CandidateCount.channel,
               func.sum(CandidateCount.n))
        .group_by(CandidateCount.agent_id, CandidateCount.stage, CandidateCount.source, CandidateCount.channel))
    return {tuple(r[:4]): r[4] for r in rows if r[4]}


def test_counts_stay_exact_through_adds_moves_edits_erasure_deletes_and_rollbacks(app):
    one, two = make_agent("One"), make_agent("Two")
    moment = now()

    def add(agent, email, channel="email", **kw):
        contact = services.clean_contact(services.ContactData(name="P", email=email, channel=channel), "US", "UTC")
        return services.add_candidate(db.session, agent, contact, moment + timedelta(days=3), moment, **kw)[0]

    people = [add(one, f"a{i}@example.com") for i in range(5)] + [add(two, "b@example.com", source="api")]
    linked = add(one, "link@example.com", channel="link", invite_now=True)  # counted as invited at once
    db.session.commit()
    assert _maintained() == _recount() and tally.count(db.session, one.id, Stage.INVITED) == 1
    stages.move(db.session, people[0], Stage.CLICKED, moment)
    stages.move(db.session, people[0], Stage.STARTED, moment)
    stages.move(db.session, people[1], Stage.EXPIRED, moment)
    assert not stages.move(db.session, people[0], Stage.INVITED, moment)  # refused: nothing changes
    db.session.commit()
    assert _maintained() == _recount()
    services.extend_deadline(db.session, people[1], moment + timedelta(days=9), moment, None)  # expired → added
    contact = services.clean_contact(services.ContactData(name="P", email="a2@example.com", phone="+14155550100",
                                                          channel="sms"), "US", "UTC")
    services.update_contact(db.session, people[2], contact, moment)  # channel email → sms
    services.erase_candidate(db.session, people[3], moment, None)
    db.session.delete(linked)
    db.session.commit()
    assert _maintained() == _recount()
    db.session.execute(insert(Candidate), [dict(agent_id=two.id, email=f"bulk{i}@example.com", stage=Stage.INVITED,
                                                source="bulk", token=f"t{i}") for i in range(20)])
    add(one, "gone@example.com")
    stages.move(db.session, people[4], Stage.COMPLETED, moment)
    db.session.rollback()  # a rolled-back change takes its count with it
    assert _maintained() == _recount()
    assert tally.by_agent_and_stage(db.session, [one.id, two.id]) == {
        a: {s: sum(n for (ag, st, _so, _ch), n in _recount().items() if ag == a and st == s) for s in Stage.ALL}
        for a in (one.id, two.id)}
    assert tally.count(db.session) == db.session.scalar(
        select(func.count()).select_from(Candidate).where(Candidate.erased_at.is_(None)))


def test_a_fold_keeps_every_total_and_leaves_one_row_per_count(app):
    _crowd(40)
    for c in db.session.scalars(select(Candidate).limit(15)):
        stages.move(db.session, c, Stage.COMPLETED, now())
    db.session.commit()
    before = _maintained()
    assert tally.pending(db.session) > 0
    tally.fold(db.session)
    db.session.commit()
    assert _maintained() == before == _recount()
    assert tally.pending(db.session) == 0
    assert db.session.scalar(select(func.count()).select_from(CandidateCount)) == len(before)


def test_the_list_folds_counts_only_once_enough_changes_wait(auth, client, monkeypatch):
    _crowd(30)
    waiting = tally.pending(db.session)
    monkeypatch.setattr(tally, "FOLD_AFTER", waiting + 1)
    client.get("/candidates")
    assert tally.pending(db.session) == waiting  # below the threshold: the GET wrote nothing
    db.session.add(Candidate(agent_id=make_agent("Third").id, name="x", email="x@example.com"))
    db.session.commit()
    client.get("/agents")
    assert tally.pending(db.session) == 0 and _maintained() == _recount()


def test_a_fold_does_not_lose_a_change_another_transaction_has_not_committed(app):
    """PostgreSQL: writers never wait for a fold and a fold never drops their rows. (SQLite
    has one writer at a time: the interleaving cannot happen there.)"""
    if db.engine.dialect.name != "postgresql":
        return
    from sqlalchemy.orm import Session

    agent = make_agent()
    agent_id = agent.id
    _crowd(10)
    with Session(db.engine) as writer, Session(db.engine) as folder:
        writer.add(Candidate(agent_id=agent_id, name="late", email="late@example.com"))
        writer.flush()  # its +1 row exists, uncommitted
        tally.fold(folder)
        folder.commit()
        writer.commit()
    assert _maintained() == _recount()


def test_agent_pages_show_exact_counts_per_stage(auth, client):
    one, two, people = _crowd(50)
    stages.move(db.session, people[1], Stage.COMPLETED, now())
    db.session.commit()
    counts = tally.by_agent_and_stage(db.session, [one.id])[one.id]
    expected = {s: sum(1 for p in people if p.agent_id == one.id and p.stage == s) for s in Stage.ALL}
    assert counts == expected
    body = client.get("/agents").get_data(as_text=True)
    row = body[body.index(">Welder</a>"):].split("</tr>")[0]
    cells = [int(n) for n in re.findall(r'<td class="num"[^>]*>(\d+)</td>', row)]
    # Waiting and expired are current stages (maintained counts); the funnel counts the stages
    # the invited reached (the Metrics page's definitions), from their timestamps, and those who
    # came in by a link without an invite from "clicked" on (people[1] went straight to completed).
    invited = [p for p in people if p.agent_id == one.id
               and any(getattr(p, f"{s}_at") for s in ("invited", "clicked", "started", "completed"))]
    reached = [sum(1 for p in invited if any(getattr(p, f"{s}_at") for s in later))
               for later in (("invited",), ("clicked", "started", "completed"), ("started", "completed"),
                             ("completed",))]
    assert cells == [expected["added"], *reached, expected["expired"]]


# --- the migration --------------------------------------------------------------------------

@pytest.fixture()
def fresh_database_url(database_url, tmp_path):
    """An empty database of the test server's kind (PostgreSQL: a database of its own on the
    same server; a schema of its own shared tables with the test database's public schema)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    from milo_portal.config import normalise_database_url

    if not database_url.startswith("postgresql"):
        yield f"sqlite:///{tmp_path / 'before-0006.sqlite3'}"
        return
    url = make_url(normalise_database_url(database_url))
    name = f"{url.database}_before_0006"
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield url.set(database=name).render_as_string(hide_password=False)
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def test_the_migration_counts_and_indexes_candidates_that_existed_before_it(fresh_database_url):
    from flask_migrate import downgrade, upgrade

    from milo_portal import create_app
    from milo_portal.config import TestConfig
    from sqlalchemy import MetaData, Table

    from milo_portal.models import Agent

    app = create_app(TestConfig, database_url=fresh_database_url)
    with app.app_context():
        upgrade(revision="0003")
        conn = db.session.connection()
        conn.execute(insert(Agent.__table__), [dict(id=1, title="Old", company="Acme"), dict(id=2, title="Older", company="Acme")])
        # The candidate table as revision 0003 had it: later revisions add columns.
        later = {"visited_at", "deadline_follows_invite"}
        old_candidate = Table("candidate", MetaData(), *[c._copy() for c in Candidate.__table__.columns
                                                          if c.name not in later])
        conn.execute(insert(old_candidate), [
            dict(agent_id=1 + i % 2, name=f"Person {i}", email=f"before{i}@example.com",
                 phone=f"+1415555{i:04d}" if i % 3 == 0 else None, stage=Stage.ALL[i % 8],
                 channel=("email", "sms")[i % 2], source="bulk", token=f"token-{i}",
                 erased_at=now() if i == 7 else None)
            for i in range(40)])
        conn.execute(insert(old_candidate), [dict(agent_id=1, name="Grace Hopper", email="grace@navy.test",
                                                        phone="+14155550100", token="grace")])
        db.session.commit()
        upgrade()
        assert _maintained() == _recount() and tally.count(db.session) == 40
        assert _searched("grace hop") == _searched("5550100") == {"grace@navy.test"}
        assert _searched("before1") == {f"before{i}@example.com" for i in (1, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19)}
        page = services.list_candidates(db.session, services.ListFilters(agent_id=1, sort="name", desc=False))
        assert page.total == 21 and len(page.rows) == 21  # 20 people and Grace
        # The triggers keep rows from before the migration in step too.
        grace = db.session.scalar(select(Candidate).where(Candidate.token == "grace"))
        grace.name = "Grace Brewster"
        stages.move(db.session, grace, Stage.COMPLETED, now())
        db.session.commit()
        assert _searched("hopper") == set() and _searched("brewster") == {"grace@navy.test"}
        assert _maintained() == _recount()
        # And it can be undone and done again.
        db.session.commit()  # (SQLite: end the read, which holds the write lock)
        downgrade(revision="0003")
        upgrade()
        assert _maintained() == _recount() and _searched("brewster") == {"grace@navy.test"}
        db.session.remove()
        db.engine.dispose()


def test_a_list_page_that_folds_the_counts_folds_in_its_own_write_unit(auth, client, monkeypatch):
    """Defect: GET /candidates folded the counts inside its read transaction. On SQLite, once
    another request had written since that read began, the fold failed at once with "database
    is locked": a 500 for 11 of 1,000 list views under load while a bulk upload was created."""
    agent = make_agent()
    db.session.add(Candidate(agent_id=agent.id, name="Bo", email="bo@example.com", stage=Stage.ADDED))
    db.session.commit()
    agent_id = agent.id
    db.session.rollback()
    monkeypatch.setattr(tally, "FOLD_AFTER", 1)
    real, wrote = tally.pending, []

    def pending_then_another_request_writes(session):
        waiting = real(session)
        if not wrote:  # after this page's read began: another request adds someone
            wrote.append(True)
            other = create_engine(db.engine.url.render_as_string(hide_password=False))  # its own connection
            with other.begin() as conn:
                conn.execute(insert(Candidate.__table__).values(
                    agent_id=agent_id, name="Cy", email="cy@example.com", stage=Stage.ADDED, token="t" * 32,
                    channel="email", source="manual", created_at=now(), updated_at=now()))
            other.dispose()
        return waiting

    monkeypatch.setattr(tally, "pending", pending_then_another_request_writes)
    page = client.get("/candidates")
    assert page.status_code == 200
    db.session.rollback()  # a fresh read, after the page's writes
    assert db.session.scalar(select(func.count()).select_from(CandidateCount).where(
        CandidateCount.folded.is_(False))) == 0  # folded, Cy's row (written before the fold began) too
    assert tally.by_agent_and_stage(db.session, [agent_id])[agent_id][Stage.ADDED] == 2
