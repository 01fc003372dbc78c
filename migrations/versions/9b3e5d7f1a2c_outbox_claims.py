"""outbox claims for drain tasks

Revision ID: 9b3e5d7f1a2c
Revises: 7c1d2e3f4a5b
Create Date: 2026-11-26 01:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '9b3e5d7f1a2c'
down_revision = '7c1d2e3f4a5b'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('outbox_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claimed_until', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('claimed_by', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_outbox_events_waiting', ['delivered_at', 'failed_at'], unique=False)


def downgrade():
    with op.batch_alter_table('outbox_events', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_events_waiting')
        batch_op.drop_column('claimed_by')
        batch_op.drop_column('claimed_until')
