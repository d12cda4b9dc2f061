"""link visits and machine opens recorded apart from human clicks and opens; deadlines
counted from the invite

Revision ID: 0008
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0004'
branch_labels = None
depends_on = None

OLD_TYPES = ('added', 'invited', 'delivered', 'opened', 'clicked', 'started', 'answered', 'completed', 'reminded',
             'nudged', 'bounced', 'failed', 'opted_out', 'opted_in', 'expired', 'deadline_extended', 'erased')
NEW_TYPES = OLD_TYPES + ('visited', 'machine_opened')


def _types(values) -> str:
    return "type IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def upgrade():
    with op.batch_alter_table('candidate', schema=None) as batch_op:
        batch_op.add_column(sa.Column('visited_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('deadline_follows_invite', sa.Boolean(), server_default=sa.false(),
                                      nullable=False))
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_event_type'), type_='check')
        batch_op.create_check_constraint('type', _types(NEW_TYPES))


def downgrade():
    op.execute("DELETE FROM event WHERE type IN ('visited', 'machine_opened')")
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_event_type'), type_='check')
        batch_op.create_check_constraint('type', _types(OLD_TYPES))
    with op.batch_alter_table('candidate', schema=None) as batch_op:
        batch_op.drop_column('deadline_follows_invite')
        batch_op.drop_column('visited_at')
