"""metrics: indexes for the Metrics page, the agents' funnels and the drill-down lists

Revision ID: 0011_metrics
Revises: 0006_fast_candidate_lists

- ``ix_event_candidate_type``: "has this candidate an opened / failed / reminded event"
  is one index seek (the funnel's opens and delivery failures, the follow-ups count).
- ``ix_candidate_funnel``: every agent's funnel (agents list) read from a narrow index in
  agent order instead of the whole candidate table.
- ``ix_message_created_at``: deliverability reads the messages of a date range.
No new event types or columns: ``delivered`` already comes from provider status reports and
per-question timing comes from ``answer.answered_at``.
"""
from alembic import op


revision = '0011_metrics'
down_revision = '0006_fast_candidate_lists'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.create_index('ix_event_candidate_type', ['candidate_id', 'type'], unique=False)
    with op.batch_alter_table('candidate', schema=None) as batch_op:
        batch_op.create_index('ix_candidate_funnel', ['agent_id', 'invited_at', 'clicked_at', 'started_at',
                                                      'completed_at', 'stage'], unique=False)
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.create_index('ix_message_created_at', ['created_at'], unique=False)


def downgrade():
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.drop_index('ix_message_created_at')
    with op.batch_alter_table('candidate', schema=None) as batch_op:
        batch_op.drop_index('ix_candidate_funnel')
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.drop_index('ix_event_candidate_type')
