"""agents' funnels: failed invites kept in the maintained counts, not looked up per page

Revision ID: 0021_agent_failed_invites
Revises: 0020_metrics_mix

The agents' funnels (agents list, agent page) measure their rates against *delivered*:
invited minus the candidates whose invite failed or bounced and who never clicked. The
stages came from ``agent_funnel_count`` (0016_agent_tally), but the failures were read on
every page from the failure events, their messages and their candidates: 0.2-0.4 s at a
million candidates, the only part of the agents list that grew with the data.

``candidate.invite_failed_at`` is the time of the candidate's first failure or bounce of an
invite, set by a trigger on ``event`` in the same transaction as that event (whichever code
records it: the dispatcher, a delivery report, a bounce). ``agent_funnel_count`` gains
``failed`` (``invite_failed_at`` set) in its key, and its triggers on ``candidate`` watch
that column too, so the funnel reads every figure from the maintained rows. The failure
sets a column of the candidate's row, not a count from the event's trigger: the row's lock
puts it in order with a click or a start of the same candidate in another transaction, and
the count follows the row's old and new values, as for every other step.

The candidates whose invite failed before this revision are found from their events, and
the counts are rebuilt once with the new key. The downgrade drops the two columns and puts
0016's triggers back (rows that differed only by ``failed`` are summed by every reader).
"""
from alembic import op
import sqlalchemy as sa


revision = '0021_agent_failed_invites'
down_revision = '0020_metrics_mix'
branch_labels = None
depends_on = None

FAILURES = "('failed', 'bounced')"
OLD_TRIGGERS = ("agent_funnel_count_insert", "agent_funnel_count_delete", "agent_funnel_count_update")
OLD_FUNCTIONS = ("agent_funnel_count_inserted", "agent_funnel_count_deleted", "agent_funnel_count_updated")


def _reached(row: str) -> str:
    """SQL: how far candidate ``row`` got (3 completed, 2 started, 1 clicked, 0 none)."""
    return (f"(CASE WHEN {row}.completed_at IS NOT NULL THEN 3 WHEN {row}.started_at IS NOT NULL THEN 2 "
            f"WHEN {row}.clicked_at IS NOT NULL THEN 1 ELSE 0 END)")


def _in_funnel(row: str) -> str:
    """SQL: candidate ``row`` is counted (invited, or clicked, started or completed)."""
    return (f"({row}.invited_at IS NOT NULL OR {row}.clicked_at IS NOT NULL OR {row}.started_at IS NOT NULL "
            f"OR {row}.completed_at IS NOT NULL)")


def _triggers(with_failed: bool) -> tuple[list[str], list[str], list[str]]:
    """0016's triggers on ``candidate``, with or without ``failed`` in the key: SQLite's
    triggers, PostgreSQL's functions and PostgreSQL's triggers."""
    key_columns = "agent_id, invited, reached" + (", failed" if with_failed else "")
    watched = "agent_id, invited_at, clicked_at, started_at, completed_at" + (", invite_failed_at" if with_failed else "")
    groups = "1, 2, 3, 4" if with_failed else "1, 2, 3"

    def key(row: str) -> str:
        failed = f", {row}.invite_failed_at IS NOT NULL" if with_failed else ""
        return f"{row}.agent_id, {row}.invited_at IS NOT NULL, {_reached(row)}{failed}"

    def changed(is_not: str) -> str:
        failed = " OR (old.invite_failed_at IS NULL) <> (new.invite_failed_at IS NULL)" if with_failed else ""
        return (f"old.agent_id {is_not} new.agent_id OR (old.invited_at IS NULL) <> (new.invited_at IS NULL)"
                f" OR {_reached('old')} <> {_reached('new')}{failed}")

    sqlite = [
        f"""CREATE TRIGGER agent_funnel_count_insert AFTER INSERT ON candidate WHEN {_in_funnel('new')}
        BEGIN
            INSERT INTO agent_funnel_count ({key_columns}, n, folded) VALUES ({key('new')}, 1, 0);
        END""",
        f"""CREATE TRIGGER agent_funnel_count_delete AFTER DELETE ON candidate WHEN {_in_funnel('old')}
        BEGIN
            INSERT INTO agent_funnel_count ({key_columns}, n, folded) VALUES ({key('old')}, -1, 0);
        END""",
        f"""CREATE TRIGGER agent_funnel_count_update AFTER UPDATE OF {watched} ON candidate
        WHEN {changed('IS NOT')}
        BEGIN
            INSERT INTO agent_funnel_count ({key_columns}, n, folded) SELECT {key('old')}, -1, 0
                WHERE {_in_funnel('old')};
            INSERT INTO agent_funnel_count ({key_columns}, n, folded) SELECT {key('new')}, 1, 0
                WHERE {_in_funnel('new')};
        END""",
    ]
    functions = [
        f"""CREATE FUNCTION agent_funnel_count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO agent_funnel_count ({key_columns}, n, folded)
                SELECT {key('r')}, count(*), false FROM new_rows r WHERE {_in_funnel('r')} GROUP BY {groups};
            RETURN NULL;
        END $$""",
        f"""CREATE FUNCTION agent_funnel_count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO agent_funnel_count ({key_columns}, n, folded)
                SELECT {key('r')}, -count(*), false FROM old_rows r WHERE {_in_funnel('r')} GROUP BY {groups};
            RETURN NULL;
        END $$""",
        f"""CREATE FUNCTION agent_funnel_count_updated() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF {_in_funnel('old')} THEN
                INSERT INTO agent_funnel_count ({key_columns}, n, folded) VALUES ({key('old')}, -1, false);
            END IF;
            IF {_in_funnel('new')} THEN
                INSERT INTO agent_funnel_count ({key_columns}, n, folded) VALUES ({key('new')}, 1, false);
            END IF;
            RETURN NULL;
        END $$""",
    ]
    postgres = [
        """CREATE TRIGGER agent_funnel_count_insert AFTER INSERT ON candidate REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION agent_funnel_count_inserted()""",
        """CREATE TRIGGER agent_funnel_count_delete AFTER DELETE ON candidate REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION agent_funnel_count_deleted()""",
        f"""CREATE TRIGGER agent_funnel_count_update AFTER UPDATE OF {watched} ON candidate
        FOR EACH ROW WHEN ({changed('IS DISTINCT FROM')}) EXECUTE FUNCTION agent_funnel_count_updated()""",
    ]
    return sqlite, functions, postgres


# The first failure or bounce of an invite sets the candidate's ``invite_failed_at`` (once).
_MARK_FAILED = ("UPDATE candidate SET invite_failed_at = new.at "
                "WHERE id = new.candidate_id AND invite_failed_at IS NULL "
                "AND EXISTS (SELECT 1 FROM message WHERE message.id = new.message_id AND message.kind = 'invite');")
_WHEN_FAILED = f"new.type IN {FAILURES} AND new.candidate_id IS NOT NULL AND new.message_id IS NOT NULL"
SQLITE_EVENT_TRIGGER = f"""CREATE TRIGGER candidate_invite_failed AFTER INSERT ON event WHEN {_WHEN_FAILED}
    BEGIN {_MARK_FAILED} END"""
POSTGRES_EVENT_FUNCTION = f"""CREATE FUNCTION candidate_invite_failed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        {_MARK_FAILED}
        RETURN NULL;
    END $$"""
POSTGRES_EVENT_TRIGGER = f"""CREATE TRIGGER candidate_invite_failed AFTER INSERT ON event
    FOR EACH ROW WHEN ({_WHEN_FAILED}) EXECUTE FUNCTION candidate_invite_failed()"""


def _drop_candidate_triggers(dialect: str) -> None:
    if dialect == "sqlite":
        for name in OLD_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    elif dialect == "postgresql":
        for name in OLD_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON candidate")
        for name in OLD_FUNCTIONS:
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")


def _create_candidate_triggers(dialect: str, with_failed: bool) -> None:
    sqlite, functions, postgres = _triggers(with_failed)
    if dialect == "sqlite":
        for statement in sqlite:
            op.execute(statement)
    elif dialect == "postgresql":
        for statement in functions + postgres:
            op.execute(statement)


def upgrade():
    dialect = op.get_bind().dialect.name
    # (Adding a column that may be NULL rewrites no table, on either database.)
    op.add_column('candidate', sa.Column('invite_failed_at', sa.DateTime(), nullable=True))
    op.add_column('agent_funnel_count', sa.Column('failed', sa.Boolean(), server_default=sa.false(), nullable=False))
    # The old triggers go first, so filling the new column counts nothing; on PostgreSQL the
    # ALTER TABLE above keeps writers out until this transaction ends (SQLite: the write lock).
    _drop_candidate_triggers(dialect)
    failures = ("SELECT e.candidate_id FROM event e JOIN message m ON m.id = e.message_id "
                f"WHERE e.type IN {FAILURES} AND m.kind = 'invite'")
    op.execute("UPDATE candidate SET invite_failed_at = ("
               "SELECT min(e.at) FROM event e JOIN message m ON m.id = e.message_id "
               f"WHERE e.candidate_id = candidate.id AND e.type IN {FAILURES} AND m.kind = 'invite') "
               f"WHERE id IN ({failures})")
    # The counts again, once, with the new key.
    op.execute("DELETE FROM agent_funnel_count")
    true = "1" if dialect == "sqlite" else "true"
    op.execute("INSERT INTO agent_funnel_count (agent_id, invited, reached, failed, n, folded) "
               f"SELECT c.agent_id, c.invited_at IS NOT NULL, {_reached('c')}, c.invite_failed_at IS NOT NULL, "
               f"count(*), {true} FROM candidate c WHERE {_in_funnel('c')} GROUP BY 1, 2, 3, 4")
    _create_candidate_triggers(dialect, with_failed=True)
    if dialect == "sqlite":
        op.execute(SQLITE_EVENT_TRIGGER)
    elif dialect == "postgresql":
        op.execute(POSTGRES_EVENT_FUNCTION)
        op.execute(POSTGRES_EVENT_TRIGGER)


def downgrade():
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS candidate_invite_failed")
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS candidate_invite_failed ON event")
        op.execute("DROP FUNCTION IF EXISTS candidate_invite_failed()")
    _drop_candidate_triggers(dialect)
    # A plain DROP COLUMN (SQLite 3.35+): a batch rebuild of ``candidate`` would drop the
    # other migrations' triggers on it.
    op.execute("ALTER TABLE agent_funnel_count DROP COLUMN failed")
    op.execute("ALTER TABLE candidate DROP COLUMN invite_failed_at")
    _create_candidate_triggers(dialect, with_failed=False)
