"""lever: the API key an integration reads an applicationCreated event's opportunity with

Revision ID: 0023_lever_api_key
Revises: 0022_shown_once

Lever's webhooks carry ids only (``data.opportunityId``, ``data.applicationId``). With an
API key saved on the Lever integration's page, the app reads the opportunity from Lever's
API (name, e-mail, phone, and the posting its application is for) before adding the
applicant. The key is kept as it is, like the integration's secret; the page never shows it.
"""
from alembic import op
import sqlalchemy as sa


revision = '0023_lever_api_key'
down_revision = '0022_shown_once'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('integration', sa.Column('api_key', sa.String(length=200), nullable=True))


def downgrade():
    with op.batch_alter_table('integration') as batch:
        batch.drop_column('api_key')
