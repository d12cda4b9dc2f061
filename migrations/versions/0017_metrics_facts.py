"""metrics: one narrow row of facts per candidate, kept fresh by triggers and a refresh

Revision ID: 0017_metrics_facts
Revises: 0016_agent_tally

``metrics_fact`` holds, per candidate, what the Metrics page counts and groups by (the raw
stage facts as bits, the invite's local weekday and hour, the device, the first invite's
variant, the follow-ups before completing, the answers, the step durations, the recipient
domain, the messages per channel), so the page reads one narrow row per candidate instead
of joining every candidate to their events, messages and answers. Triggers put the
candidate's id in ``metrics_stale`` in the same transaction as every change a fact depends
on: a candidate inserted, a watched candidate column changed, an event of a type a fact
reads, an answer saved, changed or removed, a message made or its delivery (status,
attempts, error, sent) or variant changed. ``metrics.facts.refresh`` takes ids out and
recomputes their rows in short write units before the page reads them. A deleted
candidate's rows go with it (foreign key, cascade). The candidates already there are marked
here, and the first refresh (the scheduler's tick, or the page) fills their rows.

``metrics_answer`` holds the time each candidate spent on each question, with the filter
columns, written by the same refresh: the median per question reads one index in order.

The downgrade drops the triggers, their functions and the tables; it rebuilds no table (a
SQLite batch rebuild would drop the triggers of 0006 and 0016 on ``candidate``).
"""
from alembic import op
import sqlalchemy as sa



revision = '0017_metrics_facts'
down_revision = '0016_agent_tally'
branch_labels = None
depends_on = None

# The candidate columns a fact is computed from.
WATCHED = ("agent_id, source, source_detail, channel, stage, timezone, email, device_class, invited_at, "
           "clicked_at, visited_at, started_at, completed_at, created_at")
# The event types a fact reads (opens, machine opens, failed invites, follow-ups).
EVENT_TYPES = "('opened', 'machine_opened', 'failed', 'bounced', 'reminded', 'nudged')"
# The message columns the deliverability and the first invite's variant are read from.
MESSAGE_WATCHED = "status, attempts, last_error, sent_at, channel, variant"
# One covering index per by-table of the page: its value and the fact bits, then the columns
# the page filters on (SQLite reads it in group order and never the table).
FILTERS = ("entered_at", "agent_id", "source", "source_detail", "channel")
# One index per step duration, in its order (a percentile is the row at its rank).
STEPS = ("invite_click", "click_start", "start_complete", "invite_complete")
GROUPINGS = {"source": ("source",), "src": ("source", "source_detail"), "channel": ("channel",),
             "agent": ("agent_id",), "device": ("device",), "followups": ("followups",), "heat": ("heat",),
             "bucket": ("bucket",), "variant": ("variant",)}


# SQLite: not INSERT OR IGNORE, whose conflict clause the outer statement's overrides (an
# answer saved by an upsert would fail on a candidate already marked).
def _sqlite_mark(who: str) -> str:
    return (f"INSERT INTO metrics_stale (candidate_id) SELECT {who} "
            f"WHERE NOT EXISTS (SELECT 1 FROM metrics_stale WHERE candidate_id = {who});")


# PostgreSQL: a mark that finds the candidate already marked updates the row anyway, so that
# it always takes the row's lock: a refresh that has just claimed (deleted) the row makes it
# wait and the candidate is marked again after the refresh commits; a refresh claiming after
# it waits for its commit, then reads the change.
def _postgres_mark(who: str) -> str:
    return (f"INSERT INTO metrics_stale (candidate_id) VALUES ({who}) "
            "ON CONFLICT (candidate_id) DO UPDATE SET candidate_id = excluded.candidate_id;")


SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER metrics_fact_candidate_insert AFTER INSERT ON candidate
    BEGIN {_sqlite_mark('new.id')} END""",
    f"""CREATE TRIGGER metrics_fact_candidate_update AFTER UPDATE OF {WATCHED} ON candidate
    BEGIN {_sqlite_mark('new.id')} END""",
    f"""CREATE TRIGGER metrics_fact_event AFTER INSERT ON event WHEN new.type IN {EVENT_TYPES}
    BEGIN {_sqlite_mark('new.candidate_id')} END""",
    f"""CREATE TRIGGER metrics_fact_answer_insert AFTER INSERT ON answer
    BEGIN {_sqlite_mark('new.candidate_id')} END""",
    f"""CREATE TRIGGER metrics_fact_answer_update AFTER UPDATE OF answered_at, position ON answer
    BEGIN {_sqlite_mark('new.candidate_id')} END""",
    f"""CREATE TRIGGER metrics_fact_answer_delete AFTER DELETE ON answer
    BEGIN {_sqlite_mark('old.candidate_id')} END""",
    f"""CREATE TRIGGER metrics_fact_message_insert AFTER INSERT ON message
    BEGIN {_sqlite_mark('new.candidate_id')} END""",
    f"""CREATE TRIGGER metrics_fact_message_update AFTER UPDATE OF {MESSAGE_WATCHED} ON message
    BEGIN {_sqlite_mark('new.candidate_id')} END""",
]

# New candidates are marked once per statement (a bulk insert is one statement); every other
# mark is per row.
POSTGRES_FUNCTIONS = [
    """CREATE FUNCTION metrics_fact_added() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO metrics_stale (candidate_id) SELECT r.id FROM new_rows r ON CONFLICT DO NOTHING;
        RETURN NULL;
    END $$""",
    f"""CREATE FUNCTION metrics_fact_candidate_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        {_postgres_mark('new.id')}
        RETURN NULL;
    END $$""",
    f"""CREATE FUNCTION metrics_fact_row_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        {_postgres_mark('new.candidate_id')}
        RETURN NULL;
    END $$""",
    f"""CREATE FUNCTION metrics_fact_row_removed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        {_postgres_mark('old.candidate_id')}
        RETURN NULL;
    END $$""",
]
POSTGRES_TRIGGERS = [
    """CREATE TRIGGER metrics_fact_candidate_insert AFTER INSERT ON candidate REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION metrics_fact_added()""",
    f"""CREATE TRIGGER metrics_fact_candidate_update AFTER UPDATE OF {WATCHED} ON candidate
    FOR EACH ROW EXECUTE FUNCTION metrics_fact_candidate_changed()""",
    f"""CREATE TRIGGER metrics_fact_event AFTER INSERT ON event
    FOR EACH ROW WHEN (new.type IN {EVENT_TYPES}) EXECUTE FUNCTION metrics_fact_row_changed()""",
    """CREATE TRIGGER metrics_fact_answer_insert AFTER INSERT ON answer
    FOR EACH ROW EXECUTE FUNCTION metrics_fact_row_changed()""",
    """CREATE TRIGGER metrics_fact_answer_update AFTER UPDATE OF answered_at, position ON answer
    FOR EACH ROW EXECUTE FUNCTION metrics_fact_row_changed()""",
    """CREATE TRIGGER metrics_fact_answer_delete AFTER DELETE ON answer
    FOR EACH ROW EXECUTE FUNCTION metrics_fact_row_removed()""",
    """CREATE TRIGGER metrics_fact_message_insert AFTER INSERT ON message
    FOR EACH ROW EXECUTE FUNCTION metrics_fact_row_changed()""",
    f"""CREATE TRIGGER metrics_fact_message_update AFTER UPDATE OF {MESSAGE_WATCHED} ON message
    FOR EACH ROW EXECUTE FUNCTION metrics_fact_row_changed()""",
]
TRIGGERS = (("metrics_fact_candidate_insert", "candidate"), ("metrics_fact_candidate_update", "candidate"),
            ("metrics_fact_event", "event"), ("metrics_fact_answer_insert", "answer"),
            ("metrics_fact_answer_update", "answer"), ("metrics_fact_answer_delete", "answer"),
            ("metrics_fact_message_insert", "message"), ("metrics_fact_message_update", "message"))
FUNCTIONS = ("metrics_fact_added", "metrics_fact_candidate_changed", "metrics_fact_row_changed",
             "metrics_fact_row_removed")


def upgrade():
    dialect = op.get_bind().dialect.name
    op.create_table(
        'metrics_fact',
        sa.Column('candidate_id', sa.Integer(), nullable=False),
        sa.Column('entered_at', sa.DateTime(), nullable=True),
        sa.Column('agent_id', sa.Integer(), nullable=True),
        sa.Column('source', sa.String(length=20), nullable=True),
        sa.Column('source_detail', sa.String(length=100), nullable=True),
        sa.Column('channel', sa.String(length=20), nullable=True),
        sa.Column('flags', sa.Integer(), server_default='0', nullable=False),
        sa.Column('heat', sa.Integer(), nullable=True),
        sa.Column('bucket', sa.Integer(), nullable=True),
        sa.Column('device', sa.String(length=10), nullable=True),
        sa.Column('variant', sa.String(length=41), nullable=True),
        sa.Column('followups', sa.Integer(), server_default='0', nullable=False),
        sa.Column('answers', sa.Integer(), server_default='0', nullable=False),
        sa.Column('invite_click', sa.Float(), nullable=True),
        sa.Column('click_start', sa.Float(), nullable=True),
        sa.Column('start_complete', sa.Float(), nullable=True),
        sa.Column('invite_complete', sa.Float(), nullable=True),
        sa.Column('email_domain', sa.String(length=254), nullable=True),
        *(sa.Column(f'{channel}_{figure}', sa.Integer(), server_default='0', nullable=False)
          for channel in ('email', 'sms', 'whatsapp') for figure in ('messages', 'sent', 'failed', 'temporary')),
        sa.ForeignKeyConstraint(['candidate_id'], ['candidate.id'], name=op.f('fk_metrics_fact_candidate_id_candidate'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('candidate_id', name=op.f('pk_metrics_fact')),
    )
    op.create_index('ix_metrics_fact_entered', 'metrics_fact', ['entered_at'], unique=False)
    op.create_table(
        'metrics_stale',
        sa.Column('candidate_id', sa.Integer(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint('candidate_id', name=op.f('pk_metrics_stale')),
    )
    for name, columns in GROUPINGS.items():
        op.create_index(f'ix_metrics_fact_by_{name}', 'metrics_fact',
                        [*columns, 'flags', *(c for c in FILTERS if c not in columns)], unique=False)
    op.create_index('ix_metrics_fact_answers', 'metrics_fact',
                    ['agent_id', 'answers', 'flags', 'entered_at', 'source', 'source_detail', 'channel'], unique=False)
    for step in STEPS:
        op.create_index(f'ix_metrics_fact_time_{step}', 'metrics_fact', [step, *FILTERS], unique=False)
    op.create_table(
        'metrics_answer',
        sa.Column('answer_id', sa.Integer(), nullable=False),
        sa.Column('candidate_id', sa.Integer(), nullable=False),
        sa.Column('agent_id', sa.Integer(), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('spent', sa.Float(), nullable=False),
        sa.Column('entered_at', sa.DateTime(), nullable=True),
        sa.Column('source', sa.String(length=20), nullable=True),
        sa.Column('source_detail', sa.String(length=100), nullable=True),
        sa.Column('channel', sa.String(length=20), nullable=True),
        sa.ForeignKeyConstraint(['answer_id'], ['answer.id'], name=op.f('fk_metrics_answer_answer_id_answer'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['candidate_id'], ['candidate.id'],
                                name=op.f('fk_metrics_answer_candidate_id_candidate'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('answer_id', name=op.f('pk_metrics_answer')),
    )
    op.create_index('ix_metrics_answer_candidate', 'metrics_answer', ['candidate_id'], unique=False)
    op.create_index('ix_metrics_answer_spent', 'metrics_answer',
                    ['agent_id', 'position', 'spent', 'entered_at', 'source', 'source_detail', 'channel'], unique=False)
    # Triggers first, then the rows already there: on PostgreSQL creating a trigger locks out
    # writers until this transaction ends, so no candidate is missed or given two rows.
    if dialect == "sqlite":
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)
    elif dialect == "postgresql":
        for statement in POSTGRES_FUNCTIONS + POSTGRES_TRIGGERS:
            op.execute(statement)
    op.execute("INSERT INTO metrics_stale (candidate_id) SELECT id FROM candidate")


def downgrade():
    dialect = op.get_bind().dialect.name
    for name, table in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (f" ON {table}" if dialect == "postgresql" else ""))
    if dialect == "postgresql":
        for name in FUNCTIONS:
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    op.drop_index('ix_metrics_answer_spent', table_name='metrics_answer')
    op.drop_index('ix_metrics_answer_candidate', table_name='metrics_answer')
    op.drop_table('metrics_answer')
    op.drop_index('ix_metrics_fact_answers', table_name='metrics_fact')
    for step in STEPS:
        op.drop_index(f'ix_metrics_fact_time_{step}', table_name='metrics_fact')
    for name in GROUPINGS:
        op.drop_index(f'ix_metrics_fact_by_{name}', table_name='metrics_fact')
    op.drop_table('metrics_stale')
    op.drop_index('ix_metrics_fact_entered', table_name='metrics_fact')
    op.drop_table('metrics_fact')
