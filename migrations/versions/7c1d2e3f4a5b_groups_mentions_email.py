"""notification groups, email preferences and sent emails

Revision ID: 7c1d2e3f4a5b
Revises: 04f2b1055c88
Create Date: 2026-11-25 09:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '7c1d2e3f4a5b'
down_revision = '04f2b1055c88'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'email_messages',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=8), nullable=False),
        sa.Column('status', sa.String(length=12), nullable=False),
        sa.Column('notification_count', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('sent_at', sa.DateTime(), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('email_messages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_email_messages_user_id'), ['user_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_email_messages_status'), ['status'], unique=False)
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('email', sa.String(length=254), nullable=True))
        batch_op.add_column(sa.Column('email_mode', sa.String(length=8), server_default='away', nullable=False))
        batch_op.add_column(sa.Column('email_verified_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('last_emailed_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('email_checked_until', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('digest_until', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('email_failures', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('email_retry_at', sa.DateTime(), nullable=True))
    with op.batch_alter_table('outbox_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('group_key', sa.String(length=120), nullable=True))
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.add_column(sa.Column('email_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_notifications_email_id'), ['email_id'], unique=False)
        batch_op.create_foreign_key(
            'fk_notifications_email_id', 'email_messages', ['email_id'], ['id'], ondelete='SET NULL'
        )


def downgrade():
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_constraint('fk_notifications_email_id', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_notifications_email_id'))
        batch_op.drop_column('email_id')
    with op.batch_alter_table('outbox_events', schema=None) as batch_op:
        batch_op.drop_column('group_key')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('email_retry_at')
        batch_op.drop_column('email_failures')
        batch_op.drop_column('digest_until')
        batch_op.drop_column('email_checked_until')
        batch_op.drop_column('last_emailed_at')
        batch_op.drop_column('email_verified_at')
        batch_op.drop_column('email_mode')
        batch_op.drop_column('email')
    with op.batch_alter_table('email_messages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_email_messages_status'))
        batch_op.drop_index(batch_op.f('ix_email_messages_user_id'))
    op.drop_table('email_messages')
