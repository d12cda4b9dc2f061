"""settings row made by the migration; planner lease

The team settings row exists from the start, so no request ever inserts it while reading.
The job_lease table lets one process plan follow-ups per tick while the others dispatch.

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

# The model's defaults as they are at this revision (a migration never imports the models).
SETTINGS_DEFAULTS = {
    "id": 1, "company_name": "", "sender_name": "", "default_timezone": "UTC", "default_country": "US",
    "open_tracking": False, "window_start_minute": 9 * 60, "window_end_minute": 18 * 60,
    "send_days": "1,2,3,4,5", "initial_send_days": "1,2,3,4", "reminder_offsets_hours": "24,48",
    "nudge_lead_hours": 24, "final_nudge_lead_hours": 2, "followup_cap": 3,
    "min_spacing_auto_hours": 20, "min_spacing_manual_hours": 1,
}


def upgrade():
    op.create_table(
        'job_lease',
        sa.Column('name', sa.String(length=40), nullable=False),
        sa.Column('holder', sa.String(length=120), nullable=True),
        sa.Column('until', sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_job_lease')),
    )
    op.bulk_insert(sa.table('job_lease', sa.column('name', sa.String)), [{"name": "planner"}])
    settings = sa.table('settings', *(sa.column(name) for name in SETTINGS_DEFAULTS))
    conn = op.get_bind()
    if conn.execute(sa.text("SELECT COUNT(*) FROM settings WHERE id = 1")).scalar() == 0:
        op.bulk_insert(settings, [SETTINGS_DEFAULTS])


def downgrade():
    op.drop_table('job_lease')
