"""fast candidate lists: maintained counts, sort indexes, indexed search

Revision ID: 0006_fast_candidate_lists
Revises: 0005_server_side_sessions
Create Date: 2026-11-26 11:30:00

- ``candidate_count``: candidates per agent, stage, source and channel, written by triggers
  on ``candidate`` in the same transaction as every insert, stage/contact change, erasure
  and delete. Each change appends a +1/-1 row (see ``CandidateCount``), so writers never
  wait on a shared counter row. Rows that existed before are counted here, once.
- One index per sort of the list, ending in ``id``, for keyset paging (all candidates, and
  one agent's, for the two usual sorts).
- Search: on SQLite an FTS5 table with the trigram tokenizer over name, e-mail and phone
  (external content: it stores only the index, triggers keep it in step, rows that existed
  before are indexed here); on PostgreSQL pg_trgm GIN indexes on the same three values.
  Both find any substring of three characters or more, as the list's search always did.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0006_fast_candidate_lists'
down_revision = '0005_server_side_sessions'
branch_labels = None
depends_on = None

SORT_INDEXES = {
    "ix_candidate_sort_added": "created_at",
    "ix_candidate_sort_activity": "last_activity_at",
    "ix_candidate_sort_deadline": "deadline_at",
    "ix_candidate_sort_invited": "invited_at",
    "ix_candidate_sort_name": "name",
    "ix_candidate_sort_stage": "stage",
}
AGENT_SORT_INDEXES = {
    "ix_candidate_agent_sort_added": "created_at",
    "ix_candidate_agent_sort_activity": "last_activity_at",
}
KEY = "agent_id, stage, source, channel"
# The key columns of a count row and erasure: a change to any of them moves a candidate
# from one count to another.
COUNTED = "agent_id, stage, source, channel, erased_at"
CHANGED = ("old.agent_id IS DISTINCT FROM new.agent_id OR old.stage IS DISTINCT FROM new.stage"
           " OR old.source IS DISTINCT FROM new.source OR old.channel IS DISTINCT FROM new.channel"
           " OR (old.erased_at IS NULL) <> (new.erased_at IS NULL)")

SQLITE_TRIGGERS = [
    # counts
    f"""CREATE TRIGGER candidate_count_insert AFTER INSERT ON candidate WHEN new.erased_at IS NULL
    BEGIN
        INSERT INTO candidate_count ({KEY}, n, folded) VALUES (new.agent_id, new.stage, new.source, new.channel, 1, 0);
    END""",
    f"""CREATE TRIGGER candidate_count_delete AFTER DELETE ON candidate WHEN old.erased_at IS NULL
    BEGIN
        INSERT INTO candidate_count ({KEY}, n, folded) VALUES (old.agent_id, old.stage, old.source, old.channel, -1, 0);
    END""",
    f"""CREATE TRIGGER candidate_count_update AFTER UPDATE OF {COUNTED} ON candidate
    WHEN {CHANGED.replace('IS DISTINCT FROM', 'IS NOT')}
    BEGIN
        INSERT INTO candidate_count ({KEY}, n, folded)
            SELECT old.agent_id, old.stage, old.source, old.channel, -1, 0 WHERE old.erased_at IS NULL;
        INSERT INTO candidate_count ({KEY}, n, folded)
            SELECT new.agent_id, new.stage, new.source, new.channel, 1, 0 WHERE new.erased_at IS NULL;
    END""",
    # search (an external-content FTS5 table is told each old value to take out)
    """CREATE TRIGGER candidate_search_insert AFTER INSERT ON candidate
    BEGIN
        INSERT INTO candidate_search (rowid, name, email, phone) VALUES (new.id, new.name, new.email, new.phone);
    END""",
    """CREATE TRIGGER candidate_search_delete AFTER DELETE ON candidate
    BEGIN
        INSERT INTO candidate_search (candidate_search, rowid, name, email, phone)
            VALUES ('delete', old.id, old.name, old.email, old.phone);
    END""",
    """CREATE TRIGGER candidate_search_update AFTER UPDATE OF name, email, phone ON candidate
    WHEN old.name IS NOT new.name OR old.email IS NOT new.email OR old.phone IS NOT new.phone
    BEGIN
        INSERT INTO candidate_search (candidate_search, rowid, name, email, phone)
            VALUES ('delete', old.id, old.name, old.email, old.phone);
        INSERT INTO candidate_search (rowid, name, email, phone) VALUES (new.id, new.name, new.email, new.phone);
    END""",
]

# PostgreSQL: inserts and deletes are counted once per statement from its transition table
# (a bulk insert of 5,000 candidates appends a handful of rows, not 5,000); an update is
# counted per row, and only when a counted column really changed.
POSTGRES_FUNCTIONS = [
    f"""CREATE FUNCTION candidate_count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO candidate_count ({KEY}, n, folded)
            SELECT {KEY}, count(*), false FROM new_rows WHERE erased_at IS NULL GROUP BY {KEY};
        RETURN NULL;
    END $$""",
    f"""CREATE FUNCTION candidate_count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO candidate_count ({KEY}, n, folded)
            SELECT {KEY}, -count(*), false FROM old_rows WHERE erased_at IS NULL GROUP BY {KEY};
        RETURN NULL;
    END $$""",
    f"""CREATE FUNCTION candidate_count_updated() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF old.erased_at IS NULL THEN
            INSERT INTO candidate_count ({KEY}, n, folded)
                VALUES (old.agent_id, old.stage, old.source, old.channel, -1, false);
        END IF;
        IF new.erased_at IS NULL THEN
            INSERT INTO candidate_count ({KEY}, n, folded)
                VALUES (new.agent_id, new.stage, new.source, new.channel, 1, false);
        END IF;
        RETURN NULL;
    END $$""",
]
POSTGRES_TRIGGERS = [
    """CREATE TRIGGER candidate_count_insert AFTER INSERT ON candidate REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION candidate_count_inserted()""",
    """CREATE TRIGGER candidate_count_delete AFTER DELETE ON candidate REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION candidate_count_deleted()""",
    f"""CREATE TRIGGER candidate_count_update AFTER UPDATE OF {COUNTED} ON candidate
    FOR EACH ROW WHEN ({CHANGED}) EXECUTE FUNCTION candidate_count_updated()""",
]
POSTGRES_SEARCH_INDEXES = {
    "ix_candidate_search_name": "lower(name)",
    "ix_candidate_search_email": "email",
    "ix_candidate_search_phone": "phone",
}


def upgrade():
    dialect = op.get_bind().dialect.name
    op.create_table(
        'candidate_count',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('agent_id', sa.Integer(), nullable=False),
        sa.Column('stage', sa.String(length=20), nullable=False),
        sa.Column('source', sa.String(length=20), nullable=False),
        sa.Column('channel', sa.String(length=20), nullable=False),
        sa.Column('n', sa.Integer(), nullable=False),
        sa.Column('folded', sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_candidate_count')),
    )
    op.create_index('ix_candidate_count_agent_stage', 'candidate_count', ['agent_id', 'stage'], unique=False)
    op.create_index('ix_candidate_count_folded', 'candidate_count', ['folded'], unique=False)

    op.drop_index('ix_candidate_created_at', table_name='candidate')
    op.drop_index('ix_candidate_last_activity_at', table_name='candidate')
    for name, column in SORT_INDEXES.items():
        op.create_index(name, 'candidate', [column, 'id'], unique=False)
    for name, column in AGENT_SORT_INDEXES.items():
        op.create_index(name, 'candidate', ['agent_id', column, 'id'], unique=False)

    # Triggers first, then the rows already there: on PostgreSQL creating a trigger locks
    # out writers until this transaction ends, so no candidate is counted twice or missed.
    if dialect == "sqlite":
        op.execute("CREATE VIRTUAL TABLE candidate_search USING fts5("
                   "name, email, phone, content='candidate', content_rowid='id', tokenize='trigram')")
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)
        op.execute("INSERT INTO candidate_search (candidate_search) VALUES ('rebuild')")
    elif dialect == "postgresql":
        for statement in POSTGRES_FUNCTIONS + POSTGRES_TRIGGERS:
            op.execute(statement)
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        for name, expression in POSTGRES_SEARCH_INDEXES.items():
            op.execute(f"CREATE INDEX {name} ON candidate USING gin (({expression}) gin_trgm_ops)")
    op.execute(f"INSERT INTO candidate_count ({KEY}, n, folded) "
               f"SELECT {KEY}, count(*), {'1' if dialect == 'sqlite' else 'true'} FROM candidate "
               f"WHERE erased_at IS NULL GROUP BY {KEY}")


def downgrade():
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in ("candidate_count_insert", "candidate_count_delete", "candidate_count_update",
                     "candidate_search_insert", "candidate_search_delete", "candidate_search_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS candidate_search")
    elif dialect == "postgresql":
        for name in ("candidate_count_insert", "candidate_count_delete", "candidate_count_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON candidate")
        for name in ("candidate_count_inserted", "candidate_count_deleted", "candidate_count_updated"):
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
        for name in POSTGRES_SEARCH_INDEXES:
            op.execute(f"DROP INDEX IF EXISTS {name}")
    for name in list(SORT_INDEXES) + list(AGENT_SORT_INDEXES):
        op.drop_index(name, table_name='candidate')
    op.create_index('ix_candidate_last_activity_at', 'candidate', ['last_activity_at'], unique=False)
    op.create_index('ix_candidate_created_at', 'candidate', ['created_at'], unique=False)
    op.drop_index('ix_candidate_count_folded', table_name='candidate_count')
    op.drop_index('ix_candidate_count_agent_stage', table_name='candidate_count')
    op.drop_table('candidate_count')
