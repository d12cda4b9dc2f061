"""operations: audit log, retention and backup settings, scheduler heartbeat

- ``audit_entry``: who did what and when (logins, team, templates, settings, candidate
  deletions and exports...), filtered by person, kind and date on the Audit log page.
- ``ops_settings``: one row (id 1, made here so reading it never inserts): how long personal
  data and the audit log are kept, the nightly backup's settings and its last outcome.
- ``heartbeat``: when the scheduler's tick last completed, for /healthz and /ops/metrics.
- ``job_lease`` rows ``daily`` (retention, audit purge) and ``backup``: one process runs each.

Revision ID: 0012_operations
Revises: 0009_bulk_upload
"""
from alembic import op
import sqlalchemy as sa


revision = '0012_operations'
down_revision = '0009_bulk_upload'
branch_labels = None
depends_on = None

# The model's defaults as they are at this revision (a migration never imports the models).
OPS_DEFAULTS = {"id": 1, "retention_days": 180, "audit_retention_days": 730, "backup_enabled": False,
                "backup_keep": 7, "backup_hour": 2}


def upgrade():
    op.create_table(
        'audit_entry',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.Column('actor_id', sa.Integer(), nullable=True),
        sa.Column('actor', sa.String(length=300), nullable=False),
        sa.Column('kind', sa.String(length=40), nullable=False),
        sa.Column('detail', sa.String(length=1000), nullable=False),
        sa.Column('address', sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(['actor_id'], ['user.id'], name=op.f('fk_audit_entry_actor_id_user'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_entry')),
    )
    with op.batch_alter_table('audit_entry', schema=None) as batch_op:
        batch_op.create_index('ix_audit_entry_at', ['at'], unique=False)
        batch_op.create_index('ix_audit_entry_kind_at', ['kind', 'at'], unique=False)
        batch_op.create_index('ix_audit_entry_actor_at', ['actor_id', 'at'], unique=False)

    op.create_table(
        'ops_settings',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('retention_days', sa.Integer(), nullable=False),
        sa.Column('audit_retention_days', sa.Integer(), nullable=False),
        sa.Column('backup_enabled', sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column('backup_keep', sa.Integer(), nullable=False),
        sa.Column('backup_hour', sa.Integer(), nullable=False),
        sa.Column('last_backup_at', sa.DateTime(), nullable=True),
        sa.Column('last_backup_size', sa.BigInteger(), nullable=True),
        sa.Column('last_backup_path', sa.String(length=1000), nullable=True),
        sa.Column('last_backup_error', sa.String(length=1000), nullable=True),
        sa.Column('last_backup_error_at', sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_ops_settings')),
    )
    op.bulk_insert(sa.table('ops_settings', *(sa.column(name) for name in OPS_DEFAULTS)), [OPS_DEFAULTS])

    op.create_table(
        'heartbeat',
        sa.Column('name', sa.String(length=40), nullable=False),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.Column('holder', sa.String(length=120), nullable=True),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_heartbeat')),
    )
    op.bulk_insert(sa.table('job_lease', sa.column('name', sa.String)), [{"name": "daily"}, {"name": "backup"}])


def downgrade():
    op.execute("DELETE FROM job_lease WHERE name IN ('daily', 'backup')")
    op.drop_table('heartbeat')
    op.drop_table('ops_settings')
    op.drop_table('audit_entry')
