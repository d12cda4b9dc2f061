"""settings row made by the migration; planner lease; rate limit hits

The team settings row exists from the start, so no request ever inserts it while reading.
The job_lease table lets one process plan follow-ups per tick while the others dispatch.
rate_hit counts share-link sign-ups per link, address and e-mail, shared by every worker.

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


    op.create_table(
        'rate_hit',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=300), nullable=False),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_rate_hit')),
    )
    with op.batch_alter_table('rate_hit', schema=None) as batch_op:
        batch_op.create_index('ix_rate_hit_key_at', ['key', 'at'], unique=False)


def downgrade():
    op.drop_table('rate_hit')
    op.drop_table('job_lease')
