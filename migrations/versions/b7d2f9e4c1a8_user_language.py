"""the user's language: chosen, and their browser's at the last sign-in

Revision ID: b7d2f9e4c1a8
Revises: a1c4e7f20b36
Create Date: 2026-12-02 11:10:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b7d2f9e4c1a8'
down_revision = 'a1c4e7f20b36'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('locale', sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column('browser_locale', sa.String(length=8), nullable=True))


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('browser_locale')
        batch_op.drop_column('locale')
