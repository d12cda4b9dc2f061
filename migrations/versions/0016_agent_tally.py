"""agents' funnels: maintained counts per agent, invited and furthest stage reached

Revision ID: 0016_agent_tally
Revises: 0015_bulk_jobs

``agent_funnel_count``: the candidates of each agent per ``invited`` (an invite went out)
and ``reached`` (0 none, 1 clicked, 2 started, 3 completed, from the timestamps, as the
Metrics page defines them), erased candidates included, written by triggers on
``candidate`` in the same transaction as every insert, invite, click, start, completion and
delete, as +1/-1 rows (like ``candidate_count``, migration 0006_fast_candidate_lists). The
agents list and the agent page read their funnels from it instead of scanning every
candidate. Only candidates in the funnel (invited, or reached >= 1) get a row. Candidates of
an upload still being created are counted at once, as the funnels always counted them.
Rows that existed before are counted here, once.

The downgrade drops triggers, functions and the table; it rebuilds no table (a SQLite batch
rebuild would drop the triggers of 0006 on ``candidate``).
"""
from alembic import op
import sqlalchemy as sa


revision = '0016_agent_tally'
down_revision = '0015_bulk_jobs'
branch_labels = None
depends_on = None

KEY = "agent_id, invited, reached"
WATCHED = "agent_id, invited_at, clicked_at, started_at, completed_at"


def _reached(row: str) -> str:
    """SQL: how far candidate ``row`` got (3 completed, 2 started, 1 clicked, 0 none)."""
    return (f"(CASE WHEN {row}.completed_at IS NOT NULL THEN 3 WHEN {row}.started_at IS NOT NULL THEN 2 "
            f"WHEN {row}.clicked_at IS NOT NULL THEN 1 ELSE 0 END)")


def _in_funnel(row: str) -> str:
    """SQL: candidate ``row`` is counted (invited, or clicked, started or completed)."""
    return (f"({row}.invited_at IS NOT NULL OR {row}.clicked_at IS NOT NULL OR {row}.started_at IS NOT NULL "
            f"OR {row}.completed_at IS NOT NULL)")


def _key(row: str) -> str:
    return f"{row}.agent_id, {row}.invited_at IS NOT NULL, {_reached(row)}"


def _changed(is_not: str) -> str:
    return (f"old.agent_id {is_not} new.agent_id OR (old.invited_at IS NULL) <> (new.invited_at IS NULL)"
            f" OR {_reached('old')} <> {_reached('new')}")


SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER agent_funnel_count_insert AFTER INSERT ON candidate WHEN {_in_funnel('new')}
    BEGIN
        INSERT INTO agent_funnel_count ({KEY}, n, folded) VALUES ({_key('new')}, 1, 0);
    END""",
    f"""CREATE TRIGGER agent_funnel_count_delete AFTER DELETE ON candidate WHEN {_in_funnel('old')}
    BEGIN
        INSERT INTO agent_funnel_count ({KEY}, n, folded) VALUES ({_key('old')}, -1, 0);
    END""",
    f"""CREATE TRIGGER agent_funnel_count_update AFTER UPDATE OF {WATCHED} ON candidate
    WHEN {_changed('IS NOT')}
    BEGIN
        INSERT INTO agent_funnel_count ({KEY}, n, folded) SELECT {_key('old')}, -1, 0 WHERE {_in_funnel('old')};
        INSERT INTO agent_funnel_count ({KEY}, n, folded) SELECT {_key('new')}, 1, 0 WHERE {_in_funnel('new')};
    END""",
]

# PostgreSQL: inserts and deletes counted once per statement from the transition table, an
# update per row and only when the counted key really changed (as 0006 does).
_ROWS_KEY = _key("r")
POSTGRES_FUNCTIONS = [
    f"""CREATE FUNCTION agent_funnel_count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO agent_funnel_count ({KEY}, n, folded)
            SELECT {_ROWS_KEY}, count(*), false FROM new_rows r WHERE {_in_funnel('r')} GROUP BY 1, 2, 3;
        RETURN NULL;
    END $$""",
    f"""CREATE FUNCTION agent_funnel_count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO agent_funnel_count ({KEY}, n, folded)
            SELECT {_ROWS_KEY}, -count(*), false FROM old_rows r WHERE {_in_funnel('r')} GROUP BY 1, 2, 3;
        RETURN NULL;
    END $$""",
    f"""CREATE FUNCTION agent_funnel_count_updated() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF {_in_funnel('old')} THEN
            INSERT INTO agent_funnel_count ({KEY}, n, folded) VALUES ({_key('old')}, -1, false);
        END IF;
        IF {_in_funnel('new')} THEN
            INSERT INTO agent_funnel_count ({KEY}, n, folded) VALUES ({_key('new')}, 1, false);
        END IF;
        RETURN NULL;
    END $$""",
]
POSTGRES_TRIGGERS = [
    """CREATE TRIGGER agent_funnel_count_insert AFTER INSERT ON candidate REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION agent_funnel_count_inserted()""",
    """CREATE TRIGGER agent_funnel_count_delete AFTER DELETE ON candidate REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION agent_funnel_count_deleted()""",
    f"""CREATE TRIGGER agent_funnel_count_update AFTER UPDATE OF {WATCHED} ON candidate
    FOR EACH ROW WHEN ({_changed('IS DISTINCT FROM')}) EXECUTE FUNCTION agent_funnel_count_updated()""",
]
TRIGGERS = ("agent_funnel_count_insert", "agent_funnel_count_delete", "agent_funnel_count_update")
FUNCTIONS = ("agent_funnel_count_inserted", "agent_funnel_count_deleted", "agent_funnel_count_updated")


def upgrade():
    dialect = op.get_bind().dialect.name
    op.create_table(
        'agent_funnel_count',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('agent_id', sa.Integer(), nullable=False),
        sa.Column('invited', sa.Boolean(), nullable=False),
        sa.Column('reached', sa.Integer(), nullable=False),
        sa.Column('n', sa.Integer(), nullable=False),
        sa.Column('folded', sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_agent_funnel_count')),
    )
    op.create_index('ix_agent_funnel_count_agent', 'agent_funnel_count', ['agent_id'], unique=False)
    op.create_index('ix_agent_funnel_count_folded', 'agent_funnel_count', ['folded'], unique=False)
    # Triggers first, then the rows already there: on PostgreSQL creating a trigger locks out
    # writers until this transaction ends, so no candidate is counted twice or missed.
    if dialect == "sqlite":
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)
    elif dialect == "postgresql":
        for statement in POSTGRES_FUNCTIONS + POSTGRES_TRIGGERS:
            op.execute(statement)
    op.execute(f"INSERT INTO agent_funnel_count ({KEY}, n, folded) "
               f"SELECT {_key('c')}, count(*), {'1' if dialect == 'sqlite' else 'true'} "
               f"FROM candidate c WHERE {_in_funnel('c')} GROUP BY 1, 2, 3")


def downgrade():
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    elif dialect == "postgresql":
        for name in TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON candidate")
        for name in FUNCTIONS:
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    op.drop_index('ix_agent_funnel_count_folded', table_name='agent_funnel_count')
    op.drop_index('ix_agent_funnel_count_agent', table_name='agent_funnel_count')
    op.drop_table('agent_funnel_count')
