"""follower indexes in user id order, for keyset batches of recipients

Revision ID: 5e8a1c3d7b90
Revises: 9b3e5d7f1a2c
Create Date: 2026-12-01 07:00:00.000000

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '5e8a1c3d7b90'
down_revision = '9b3e5d7f1a2c'
branch_labels = None
depends_on = None

# (table, old single-column index, its column, new index, its columns)
INDEXES = (
    ('question_follows', 'ix_question_follows_question_id', 'question_id',
     'ix_question_follows_question_user', ['question_id', 'user_id']),
    ('topic_follows', 'ix_topic_follows_topic_id', 'topic_id',
     'ix_topic_follows_topic_user', ['topic_id', 'user_id']),
    ('user_follows', 'ix_user_follows_followed_id', 'followed_id',
     'ix_user_follows_followed_follower', ['followed_id', 'follower_id']),
)


def upgrade():
    for table, old, _, new, columns in INDEXES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(new, columns, unique=False)
            batch_op.drop_index(old)


def downgrade():
    for table, old, column, new, _ in INDEXES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(old, [column], unique=False)
            batch_op.drop_index(new)
