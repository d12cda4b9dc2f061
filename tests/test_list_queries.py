"""The list's queries stay the same size as the table grows: no count of the table, no
OFFSET, a trigram index for the search (the defects of the hardening issue; the figures
are in bench/candidates_list.py). Helpers here are shared with test_candidate_list.py."""
from __future__ import annotations

import html
import re
from datetime import timedelta

from sqlalchemy import event, func, or_, select, text

from milo_portal.extensions import db
from milo_portal.models import Candidate, Stage
from tests.conftest import at, make_agent

T0 = at("2026-11-02T09:00:00")
NAMES = ["anna", "annabel", "bob", "carl", None, "dana", "bob"]


def _crowd(n: int = 127):
    """Two agents' candidates whose sort values tie often and are often empty."""
    one, two = make_agent("Welder"), make_agent("Painter")
    people = []
    for i in range(n):
        people.append(Candidate(
            agent_id=(one if i % 3 else two).id, name=NAMES[i % len(NAMES)], email=f"p{i}@example.com",
            stage=Stage.ALL[i % len(Stage.ALL)], source=("manual", "bulk", "share_link")[i % 3],
            channel=("email", "sms")[i % 2],
            created_at=T0 + timedelta(minutes=i // 5),  # five share each instant
            last_activity_at=None if i % 4 == 0 else T0 + timedelta(hours=i % 9),
            deadline_at=None if i % 6 == 0 else T0 + timedelta(days=i % 4),
            invited_at=None if i % 2 else T0 + timedelta(minutes=i % 11),
        ))
    db.session.add_all(people)
    db.session.commit()
    return one, two, people


def _link(body: str, rel: str | None, label: str | None = None) -> str:
    """The URL of the pager's link with this rel (or this text), unescaped."""
    pattern = (r'<a href="([^"]+)"[^>]*rel="%s"' % rel) if rel else (r'<a href="([^"]+)"[^>]*>%s</a>' % re.escape(label))
    match = re.search(pattern, body, re.S)
    assert match, f"no {rel or label} link"
    return "/candidates" + html.unescape(match.group(1))


def _statements(client, url: str, offsets: list | None = None) -> tuple[list[str], str]:
    """The SQL a request runs, and its body; ``offsets`` collects every OFFSET's value."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)
        match = re.search(r"\bOFFSET (\?|%\((\w+)\)s)", statement)
        if match and offsets is not None:
            # SQLite always renders OFFSET (0 when none is asked for); PostgreSQL names it.
            offsets.append(parameters[-1] if match.group(1) == "?" else parameters[match.group(2)])

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        body = client.get(url).get_data(as_text=True)
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    return seen, body


def _counts_candidates(statement: str) -> bool:
    return "count(" in statement.lower() and re.search(r"FROM candidate\b(?!_)", statement) is not None


def test_the_list_total_comes_from_maintained_counts_not_a_count_of_the_table(auth, client):
    """Defect: the list counted every matching candidate on each request (1M: 0.6-3 s)."""
    one, _two, _people = _crowd(60)
    for url in ("/candidates", f"/candidates?agent_id={one.id}&stage=added", "/candidates?source=bulk"):
        statements, body = _statements(client, url)
        assert not [s for s in statements if _counts_candidates(s)], url
    assert "60 candidates" in client.get("/candidates").get_data(as_text=True)


def test_the_agents_list_reads_maintained_counts_and_one_grouped_funnel(auth, client):
    """Defect: the agents list grouped and counted every candidate (1M: 1.3 s). Waiting and
    expired come from the maintained counts, and so does the funnel of stages reached (the
    Metrics page's definitions, in agent_funnel_count): no statement counts the candidates."""
    _crowd(20)
    statements, body = _statements(client, "/agents")
    assert "Welder" in body
    assert not [s for s in statements if _counts_candidates(s)]
    assert [s for s in statements if "agent_funnel_count" in s]


def test_a_deep_page_is_found_by_cursor_not_by_skipping_rows(auth, client):
    """Defect: page N skipped (N-1) x 50 rows with OFFSET, slower the deeper it went."""
    _crowd(160)
    body = client.get("/candidates").get_data(as_text=True)
    for _ in range(2):
        offsets: list = []
        _statements(client, _link(body, None, "Next →"), offsets)
        body = client.get(_link(body, None, "Next →")).get_data(as_text=True)
        assert set(offsets) <= {0}
    assert body.count('name="ids"') == 50


def test_the_search_reads_a_trigram_index(app):
    """Defect: a search compared every row's name, e-mail and phone (1M: 3.4 s)."""
    agent = make_agent()
    db.session.add(Candidate(agent_id=agent.id, name="Grace Hopper", email="grace@navy.test", phone="+14155550100"))
    db.session.commit()
    if db.engine.dialect.name == "sqlite":
        plan = db.session.execute(text(
            "EXPLAIN QUERY PLAN SELECT rowid FROM candidate_search WHERE candidate_search MATCH '\"hopper\"'")).all()
        assert any("VIRTUAL TABLE INDEX" in str(row[-1]) for row in plan)
        found = db.session.execute(text("SELECT rowid FROM candidate_search WHERE candidate_search MATCH :q"),
                                   {"q": '"5550100"'}).scalars().all()
    else:
        db.session.execute(text("SET LOCAL enable_seqscan = off"))
        condition = or_(func.lower(Candidate.name).like("%555 0100%"), Candidate.email.like("%555 0100%"),
                        Candidate.phone.like("%5550100%"))
        compiled = select(Candidate.id).where(condition).compile(db.engine)
        plan = "\n".join(row[0] for row in db.session.connection().exec_driver_sql(
            "EXPLAIN " + str(compiled), compiled.params))
        assert "ix_candidate_search_" in plan, plan
        found = db.session.scalars(select(Candidate.id).where(condition)).all()
    assert len(found) == 1
