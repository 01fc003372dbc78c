"""channels a user turned off per event type (the preferences matrix)

Today's muted types keep their meaning, off on every channel: they stay in muted_types,
which the fan-out reads; a type still on somewhere keeps its channels turned off here.

Revision ID: a1c4e7f20b36
Revises: 5e8a1c3d7b90
Create Date: 2026-12-02 11:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a1c4e7f20b36'
down_revision = '5e8a1c3d7b90'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'channel_mutes',
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('event_type', sa.String(length=32), nullable=False),
        sa.Column('channel', sa.String(length=8), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('user_id', 'event_type', 'channel'),
    )


def downgrade():
    op.drop_table('channel_mutes')
