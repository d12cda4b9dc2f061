"""secrets shown once: kept with the login for the one page that shows them

Revision ID: 0022_shown_once
Revises: 0021_agent_failed_invites

Creating an integration, an outbound URL or an API key (and rotating a secret) answers with
a redirect, so reloading the page that follows posts nothing again. The new secret waits in
the creator's own login session row (``user_session``) for that page, which reads and clears
it in one short write unit: it is shown once, to that login, and a reload shows nothing.
``shown_once_for`` names what it belongs to (``integration:12``, ``endpoint:3``, ``api_keys``).
"""
from alembic import op
import sqlalchemy as sa


revision = '0022_shown_once'
down_revision = '0021_agent_failed_invites'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('user_session', sa.Column('shown_once_for', sa.String(length=60), nullable=True))
    op.add_column('user_session', sa.Column('shown_once', sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table('user_session') as batch:
        batch.drop_column('shown_once')
        batch.drop_column('shown_once_for')
