"""bulk upload: batches in review and creating, hidden until the last chunk lands

Revision ID: 0009_bulk_upload
Revises: 0010_integrations
Create Date: 2026-11-26 15:10:00

- ``candidate.import_batch_id``: the upload that created a candidate (no foreign key: on
  SQLite that would rebuild the candidate table with its triggers and search index).
- ``import_batch`` gets what the review and the batch page need (temporary folder, channel,
  invite, column mapping, heartbeat, Undo's counts); ``import_row`` keeps what was read.
- The counting triggers of 0006_fast_candidate_lists skip candidates of a batch that is
  still ``creating``: they are counted once, when the batch becomes ``done`` (the service
  appends their counts in the same transaction as that status change), so the lists'
  totals never show a half-created upload, and removing an abandoned one changes no count.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0009_bulk_upload'
down_revision = '0010_integrations'
branch_labels = None
depends_on = None

KEY = "agent_id, stage, source, channel"
COUNTED = "agent_id, stage, source, channel, erased_at"
CHANGED = ("old.agent_id IS DISTINCT FROM new.agent_id OR old.stage IS DISTINCT FROM new.stage"
           " OR old.source IS DISTINCT FROM new.source OR old.channel IS DISTINCT FROM new.channel"
           " OR (old.erased_at IS NULL) <> (new.erased_at IS NULL)")


def _shown(row: str) -> str:
    """SQL: the candidate ``row`` (new/old) is not part of an upload still being created."""
    return (f"({row}.import_batch_id IS NULL OR NOT EXISTS (SELECT 1 FROM import_batch b "
            f"WHERE b.id = {row}.import_batch_id AND b.status = 'creating'))")


def _sqlite_triggers(hide: bool) -> list[str]:
    new_ok = f" AND {_shown('new')}" if hide else ""
    old_ok = f" AND {_shown('old')}" if hide else ""
    return [
        f"""CREATE TRIGGER candidate_count_insert AFTER INSERT ON candidate WHEN new.erased_at IS NULL{new_ok}
        BEGIN
            INSERT INTO candidate_count ({KEY}, n, folded) VALUES (new.agent_id, new.stage, new.source, new.channel, 1, 0);
        END""",
        f"""CREATE TRIGGER candidate_count_delete AFTER DELETE ON candidate WHEN old.erased_at IS NULL{old_ok}
        BEGIN
            INSERT INTO candidate_count ({KEY}, n, folded) VALUES (old.agent_id, old.stage, old.source, old.channel, -1, 0);
        END""",
        f"""CREATE TRIGGER candidate_count_update AFTER UPDATE OF {COUNTED} ON candidate
        WHEN {CHANGED.replace('IS DISTINCT FROM', 'IS NOT')}
        BEGIN
            INSERT INTO candidate_count ({KEY}, n, folded)
                SELECT old.agent_id, old.stage, old.source, old.channel, -1, 0 WHERE old.erased_at IS NULL{old_ok};
            INSERT INTO candidate_count ({KEY}, n, folded)
                SELECT new.agent_id, new.stage, new.source, new.channel, 1, 0 WHERE new.erased_at IS NULL{new_ok};
        END""",
    ]


def _postgres_functions(hide: bool) -> list[str]:
    rows_ok = (" AND (import_batch_id IS NULL OR import_batch_id NOT IN "
               "(SELECT id FROM import_batch WHERE status = 'creating'))") if hide else ""
    new_ok = f" AND {_shown('new')}" if hide else ""
    old_ok = f" AND {_shown('old')}" if hide else ""
    return [
        f"""CREATE OR REPLACE FUNCTION candidate_count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO candidate_count ({KEY}, n, folded)
                SELECT {KEY}, count(*), false FROM new_rows WHERE erased_at IS NULL{rows_ok} GROUP BY {KEY};
            RETURN NULL;
        END $$""",
        f"""CREATE OR REPLACE FUNCTION candidate_count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO candidate_count ({KEY}, n, folded)
                SELECT {KEY}, -count(*), false FROM old_rows WHERE erased_at IS NULL{rows_ok} GROUP BY {KEY};
            RETURN NULL;
        END $$""",
        f"""CREATE OR REPLACE FUNCTION candidate_count_updated() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF old.erased_at IS NULL{old_ok} THEN
                INSERT INTO candidate_count ({KEY}, n, folded)
                    VALUES (old.agent_id, old.stage, old.source, old.channel, -1, false);
            END IF;
            IF new.erased_at IS NULL{new_ok} THEN
                INSERT INTO candidate_count ({KEY}, n, folded)
                    VALUES (new.agent_id, new.stage, new.source, new.channel, 1, false);
            END IF;
            RETURN NULL;
        END $$""",
    ]


def _replace_count_triggers(hide: bool) -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in ("candidate_count_insert", "candidate_count_delete", "candidate_count_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        for statement in _sqlite_triggers(hide):
            op.execute(statement)
    elif dialect == "postgresql":
        # The triggers call these functions by name: replacing the functions is enough.
        for statement in _postgres_functions(hide):
            op.execute(statement)


def upgrade():
    with op.batch_alter_table('import_batch', schema=None) as batch_op:
        batch_op.add_column(sa.Column('folder', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('channel', sa.String(length=20), server_default='email', nullable=False))
        batch_op.add_column(sa.Column('invite', sa.Boolean(), server_default=sa.true(), nullable=False))
        batch_op.add_column(sa.Column('mapping', sa.Text(), server_default='{}', nullable=False))
        batch_op.add_column(sa.Column('heartbeat_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('undone_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('removed_count', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('kept_count', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('note', sa.Text(), nullable=True))
        batch_op.create_index('ix_import_batch_status', ['status'], unique=False)

    with op.batch_alter_table('import_row', schema=None) as batch_op:
        batch_op.add_column(sa.Column('name', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('email', sa.String(length=254), nullable=True))
        batch_op.add_column(sa.Column('phone', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('external_id', sa.String(length=100), nullable=True))

    # A plain ADD COLUMN (not a batch operation): the candidate table keeps its triggers.
    op.add_column('candidate', sa.Column('import_batch_id', sa.Integer(), nullable=True))
    op.create_index('ix_candidate_import_batch_id', 'candidate', ['import_batch_id'], unique=False)
    _replace_count_triggers(hide=True)


def downgrade():
    _replace_count_triggers(hide=False)
    op.drop_index('ix_candidate_import_batch_id', table_name='candidate')
    op.execute("ALTER TABLE candidate DROP COLUMN import_batch_id")  # not a rebuild: triggers stay

    with op.batch_alter_table('import_row', schema=None) as batch_op:
        batch_op.drop_column('external_id')
        batch_op.drop_column('phone')
        batch_op.drop_column('email')
        batch_op.drop_column('name')

    with op.batch_alter_table('import_batch', schema=None) as batch_op:
        batch_op.drop_index('ix_import_batch_status')
        batch_op.drop_column('note')
        batch_op.drop_column('kept_count')
        batch_op.drop_column('removed_count')
        batch_op.drop_column('undone_at')
        batch_op.drop_column('heartbeat_at')
        batch_op.drop_column('mapping')
        batch_op.drop_column('invite')
        batch_op.drop_column('channel')
        batch_op.drop_column('folder')
