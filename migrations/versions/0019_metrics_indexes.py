"""metrics: an index of messages by template version, and one for deliverability

Revision ID: 0019_metrics_indexes
Revises: 0018_metrics_marks

The Metrics page counts, per template that changed, the messages sent before and after the
change. Without an index on the template version SQLite built a transient index of every
message on each page view (185 ms at 100,000 candidates); ``ix_message_template_version``
lets it read the changed templates' messages only, and their candidates from the same index.

Deliverability sums the per-channel message counts of the page's candidates and groups the
e-mail ones by recipient domain: ``ix_metrics_fact_delivery`` holds those columns with the
filter columns, in domain order, so both reads scan it instead of the wide fact rows.
"""
from alembic import op


revision = '0019_metrics_indexes'
down_revision = '0018_metrics_marks'
branch_labels = None
depends_on = None

FILTERS = ("entered_at", "agent_id", "source", "source_detail", "channel")
DELIVERY = tuple(f"{channel}_{figure}" for channel in ("email", "sms", "whatsapp")
                 for figure in ("messages", "sent", "failed", "temporary"))


def upgrade():
    op.create_index('ix_message_template_version', 'message', ['template_version_id', 'sent_at', 'candidate_id'],
                    unique=False)
    op.create_index('ix_metrics_fact_delivery', 'metrics_fact', ['email_domain', *FILTERS, *DELIVERY], unique=False)


def downgrade():
    op.drop_index('ix_metrics_fact_delivery', table_name='metrics_fact')
    op.drop_index('ix_message_template_version', table_name='message')
