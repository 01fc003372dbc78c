"""quiet hours, snooze and time zone on users; the digest at the user's local hour

Revision ID: af6ddaf6d605
Revises: ca4514187507
Create Date: 2026-12-02 10:45:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'af6ddaf6d605'
down_revision = 'ca4514187507'
branch_labels = None
depends_on = None

COLUMNS = (
    ('time_zone', sa.String(length=64)),
    ('quiet_start', sa.Integer()),
    ('quiet_end', sa.Integer()),
    ('snooze_until', sa.DateTime()),
    ('quiet_summary_from', sa.DateTime()),
    ('digest_checked_at', sa.DateTime()),
)


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        for name, type_ in COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        for name, _ in reversed(COLUMNS):
            batch_op.drop_column(name)
