"""watch levels per question and topic (watching, muted; normal has no row)

Revision ID: 26eb870ad95d
Revises: af6ddaf6d605
Create Date: 2026-12-02 10:45:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '26eb870ad95d'
down_revision = 'af6ddaf6d605'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'watch_levels',
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=8), nullable=False),
        sa.Column('target_id', sa.Integer(), nullable=False),
        sa.Column('level', sa.String(length=8), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('user_id', 'kind', 'target_id'),
    )
    with op.batch_alter_table('watch_levels', schema=None) as batch_op:
        batch_op.create_index('ix_watch_levels_target', ['kind', 'target_id', 'level', 'user_id'], unique=False)


def downgrade():
    with op.batch_alter_table('watch_levels', schema=None) as batch_op:
        batch_op.drop_index('ix_watch_levels_target')
    op.drop_table('watch_levels')
