"""bulk upload: large batches are created by the scheduler, resumably

Revision ID: 0015_bulk_jobs
Revises: 0013_agent_funnel_index

``import_batch`` gains ``worker`` and ``worker_until`` (which process creates the batch's
rows, and until when it holds it: a tick takes a batch whose hold has passed) and
``rows_done`` (rows handled so far, written in the same transaction as each chunk, so an
interrupted create resumes after the last chunk that landed).
"""
from alembic import op
import sqlalchemy as sa


revision = '0015_bulk_jobs'
down_revision = '0013_agent_funnel_index'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('import_batch', schema=None) as batch_op:
        batch_op.add_column(sa.Column('worker', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('worker_until', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('rows_done', sa.Integer(), server_default='0', nullable=False))


def downgrade():
    # Plain DROP COLUMN (SQLite 3.35+), not a batch rebuild: the candidate_count triggers name
    # import_batch, and SQLite refuses to rename a rebuilt table while a trigger names it.
    op.drop_column('import_batch', 'rows_done')
    op.drop_column('import_batch', 'worker_until')
    op.drop_column('import_batch', 'worker')
