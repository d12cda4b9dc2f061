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
    with op.batch_alter_table('import_batch', schema=None) as batch_op:
        batch_op.drop_column('rows_done')
        batch_op.drop_column('worker_until')
        batch_op.drop_column('worker')
