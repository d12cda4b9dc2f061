"""metrics: the agents' funnel index also holds erased_at

Revision ID: 0013_agent_funnel_index
Revises: 0012_operations

``ix_candidate_funnel`` gains ``erased_at``: the agents' funnels count only candidates not
erased, and without that column in the index every candidate row was read from the table
(a million lookups at a million candidates); with it the funnels are read from the index alone.
"""
from alembic import op


revision = '0013_agent_funnel_index'
down_revision = '0012_operations'
branch_labels = None
depends_on = None

OLD = ['agent_id', 'invited_at', 'clicked_at', 'started_at', 'completed_at', 'stage']


def upgrade():
    with op.batch_alter_table('candidate', schema=None) as batch_op:
        batch_op.drop_index('ix_candidate_funnel')
        batch_op.create_index('ix_candidate_funnel', OLD + ['erased_at'], unique=False)


def downgrade():
    with op.batch_alter_table('candidate', schema=None) as batch_op:
        batch_op.drop_index('ix_candidate_funnel')
        batch_op.create_index('ix_candidate_funnel', OLD, unique=False)
