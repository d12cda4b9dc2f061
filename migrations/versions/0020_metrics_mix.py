"""metrics: one index for the by-tables of channel, agent, device and follow-ups; step counts

Revision ID: 0020_metrics_mix
Revises: 0019_metrics_indexes

The Metrics page read each by-table (source, channel, agent, device, follow-ups…) in a pass
of its own over every candidate of the range: nine passes of about 28 ms each at 100,000
candidates. Source and share-link tag now share the tag's index, and channel, agent, device
and follow-ups share ``ix_metrics_fact_by_mix``: their combinations with the fact bits are
few (about 3,500 rows), so one pass groups them all and the page adds the rows up per value.
The four indexes no read uses any more are dropped (each was written by every refresh).

``ix_metrics_fact_delivery`` also holds the four step durations: the pass that sums the
message counts per domain counts, in the same read, how many candidates each step has
(the times' medians need the count first; four more scans otherwise).
"""
from alembic import op


revision = '0020_metrics_mix'
down_revision = '0019_metrics_indexes'
branch_labels = None
depends_on = None

FILTERS = ("entered_at", "agent_id", "source", "source_detail", "channel")
MIX = ("channel", "agent_id", "device", "followups")
DELIVERY = tuple(f"{channel}_{figure}" for channel in ("email", "sms", "whatsapp")
                 for figure in ("messages", "sent", "failed", "temporary"))
STEPS = ("invite_click", "click_start", "start_complete", "invite_complete")
DROPPED = {"source": ("source",), "channel": ("channel",), "device": ("device",), "followups": ("followups",)}


def _columns(leading):
    return [*leading, "flags", *(c for c in FILTERS if c not in leading)]


def upgrade():
    op.create_index('ix_metrics_fact_by_mix', 'metrics_fact', _columns(MIX), unique=False)
    for name in DROPPED:
        op.drop_index(f'ix_metrics_fact_by_{name}', table_name='metrics_fact')
    op.drop_index('ix_metrics_fact_delivery', table_name='metrics_fact')
    op.create_index('ix_metrics_fact_delivery', 'metrics_fact', ['email_domain', *FILTERS, *DELIVERY, *STEPS],
                    unique=False)


def downgrade():
    op.drop_index('ix_metrics_fact_delivery', table_name='metrics_fact')
    op.create_index('ix_metrics_fact_delivery', 'metrics_fact', ['email_domain', *FILTERS, *DELIVERY], unique=False)
    for name, leading in DROPPED.items():
        op.create_index(f'ix_metrics_fact_by_{name}', 'metrics_fact', _columns(leading), unique=False)
    op.drop_index('ix_metrics_fact_by_mix', table_name='metrics_fact')
