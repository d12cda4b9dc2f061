"""metrics: on SQLite, new events and messages are marked stale by id instead of per row

Revision ID: 0018_metrics_marks
Revises: 0017_metrics_facts

A bulk upload inserts two events and a message per candidate, and the per-row insert
triggers of 0017 on ``event`` and ``message`` cost it about a second per 10,000 rows (each
row ran a trigger program that found its candidate already marked). On SQLite a single
writer at a time appends rows with ids one above the highest in use, so the rows added since
the last refresh are exactly those above a remembered id: ``metrics_mark`` keeps, per table,
the highest id the refresh has read, and ``metrics.facts.absorb`` marks the candidates of the
rows above it (in the refresh's own write units) and moves the mark. The two insert triggers
are dropped on SQLite.

SQLite reuses ids only after the rows with the highest ids are deleted; a delete trigger then
lowers the mark to the highest id still in use, so a reused id is never below it.

PostgreSQL keeps its triggers: its sequence hands out ids before transactions commit, in
any order, so an id mark would miss rows. The table is made on both databases (one schema);
PostgreSQL never reads it.

The downgrade marks the candidates of the rows above the marks first, then puts the
triggers back.
"""
from alembic import op
import sqlalchemy as sa


revision = '0018_metrics_marks'
down_revision = '0017_metrics_facts'
branch_labels = None
depends_on = None

# The event types a fact reads (as in 0017).
EVENT_TYPES = "('opened', 'machine_opened', 'failed', 'bounced', 'reminded', 'nudged')"
TABLES = ("event", "message")


def _mark(who: str) -> str:
    return (f"INSERT INTO metrics_stale (candidate_id) SELECT {who} "
            f"WHERE NOT EXISTS (SELECT 1 FROM metrics_stale WHERE candidate_id = {who});")


def _lower_on_delete(table: str) -> str:
    top = f"(SELECT coalesce(max(id), 0) FROM {table})"
    return (f"CREATE TRIGGER metrics_mark_{table}_delete AFTER DELETE ON {table} "
            f"BEGIN UPDATE metrics_mark SET last_id = {top} WHERE name = '{table}' AND last_id > {top}; END")


def upgrade():
    dialect = op.get_bind().dialect.name
    op.create_table(
        'metrics_mark',
        sa.Column('name', sa.String(length=20), nullable=False),
        sa.Column('last_id', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_metrics_mark')),
    )
    # Every row there now was marked by 0017's triggers (or is its candidate's first mark).
    for table in TABLES:
        op.execute(f"INSERT INTO metrics_mark (name, last_id) SELECT '{table}', coalesce(max(id), 0) FROM {table}")
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS metrics_fact_event")
        op.execute("DROP TRIGGER IF EXISTS metrics_fact_message_insert")
        for table in TABLES:
            op.execute(_lower_on_delete(table))


def downgrade():
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for table in TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS metrics_mark_{table}_delete")
        # What the refresh has not read yet, marked as the triggers would have.
        op.execute("INSERT INTO metrics_stale (candidate_id) SELECT DISTINCT candidate_id FROM event "
                   f"WHERE id > (SELECT last_id FROM metrics_mark WHERE name = 'event') AND type IN {EVENT_TYPES} "
                   "AND candidate_id IS NOT NULL AND candidate_id NOT IN (SELECT candidate_id FROM metrics_stale)")
        op.execute("INSERT INTO metrics_stale (candidate_id) SELECT DISTINCT candidate_id FROM message "
                   "WHERE id > (SELECT last_id FROM metrics_mark WHERE name = 'message') "
                   "AND candidate_id IS NOT NULL AND candidate_id NOT IN (SELECT candidate_id FROM metrics_stale)")
        op.execute(f"""CREATE TRIGGER metrics_fact_event AFTER INSERT ON event WHEN new.type IN {EVENT_TYPES}
    BEGIN {_mark('new.candidate_id')} END""")
        op.execute(f"""CREATE TRIGGER metrics_fact_message_insert AFTER INSERT ON message
    BEGIN {_mark('new.candidate_id')} END""")
    op.drop_table('metrics_mark')
