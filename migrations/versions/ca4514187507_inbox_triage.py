"""inbox triage: archived notifications, the question an event is about, read_at for retention

Revision ID: ca4514187507
Revises: b7d2f9e4c1a8
Create Date: 2026-12-02 10:45:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'ca4514187507'
down_revision = 'b7d2f9e4c1a8'
branch_labels = None
depends_on = None

# The event types whose payload names a question (events.types: NewQuestion, PostEvent).
QUESTION_TYPES = ('new_question', 'new_answers', 'mention')


def upgrade():
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.add_column(sa.Column('archived_at', sa.DateTime(), nullable=True))
        batch_op.create_index('ix_notifications_read_at', ['read_at'], unique=False)
    with op.batch_alter_table('outbox_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('question_id', sa.Integer(), nullable=True))
        batch_op.create_index('ix_outbox_events_question_id', ['question_id'], unique=False)
    # Existing events: copy the payload's question_id (JSON extraction as SQLAlchemy spells
    # it for SQLite and PostgreSQL alike).
    outbox = sa.table('outbox_events', sa.column('event_type', sa.String), sa.column('payload', sa.JSON),
                      sa.column('question_id', sa.Integer))
    op.execute(
        outbox.update()
        .where(outbox.c.event_type.in_(QUESTION_TYPES))
        .values(question_id=outbox.c.payload['question_id'].as_integer())
    )


def downgrade():
    with op.batch_alter_table('outbox_events', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_events_question_id')
        batch_op.drop_column('question_id')
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_index('ix_notifications_read_at')
        batch_op.drop_column('archived_at')
