"""outbox failures and source keys

Revision ID: 04f2b1055c88
Revises: 423953f1d1f3
Create Date: 2026-11-25 03:58:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '04f2b1055c88'
down_revision = '423953f1d1f3'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('outbox_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source_key', sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column('failures', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('last_error', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('failed_at', sa.DateTime(), nullable=True))
        batch_op.create_index(batch_op.f('ix_outbox_events_failed_at'), ['failed_at'], unique=False)
        batch_op.create_unique_constraint('uq_outbox_source_key', ['source_key'])


def downgrade():
    with op.batch_alter_table('outbox_events', schema=None) as batch_op:
        batch_op.drop_constraint('uq_outbox_source_key', type_='unique')
        batch_op.drop_index(batch_op.f('ix_outbox_events_failed_at'))
        batch_op.drop_column('failed_at')
        batch_op.drop_column('last_error')
        batch_op.drop_column('failures')
        batch_op.drop_column('source_key')
