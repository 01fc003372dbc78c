"""Who must hear of an event: the follow graph turned into user ids, in batches.

Recipients are computed in the database, ordered by user id and read in keyset batches, so
an event for 100,000 followers never loads them all at once.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import Select, select, union

from ..extensions import db
from ..models import (
    MutedType,
    Question,
    QuestionFollow,
    TopicFollow,
    User,
    UserFollow,
    question_topics,
)

AUDIENCE_KINDS = ("new_question", "new_answer", "everyone", "users")


class AudienceError(ValueError):
    """Raised for an audience description the fan-out cannot resolve."""


def _candidates(audience: dict) -> Select:
    """Return a SELECT of one column, ``user_id``, possibly with duplicates."""
    kind = audience.get("kind")
    if kind == "new_question":
        qid = int(audience["question_id"])
        topic_ids = select(question_topics.c.topic_id).where(question_topics.c.question_id == qid)
        author_id = select(Question.author_id).where(Question.id == qid).scalar_subquery()
        by_topic = select(TopicFollow.user_id.label("user_id")).where(TopicFollow.topic_id.in_(topic_ids))
        by_author = select(UserFollow.follower_id.label("user_id")).where(UserFollow.followed_id == author_id)
        return union(by_topic, by_author)
    if kind == "new_answer":
        qid = int(audience["question_id"])
        followers = select(QuestionFollow.user_id.label("user_id")).where(QuestionFollow.question_id == qid)
        author = select(Question.author_id.label("user_id")).where(Question.id == qid)
        return union(followers, author)
    if kind == "everyone":
        query = select(User.id.label("user_id"))
        if audience.get("role"):
            query = query.where(User.role == audience["role"])
        return query
    if kind == "users":
        ids = [int(i) for i in audience.get("user_ids", [])]
        return select(User.id.label("user_id")).where(User.id.in_(ids))
    raise AudienceError(f"unknown audience kind {kind!r}")


def recipient_batches(
    audience: dict, event_type: str, exclude_user_id: int | None, batch_size: int
) -> Iterator[list[int]]:
    """Yield the recipients' user ids in ascending batches: no duplicates, no actor, no muters."""
    candidates = _candidates(audience).subquery()
    muted = select(MutedType.user_id).where(MutedType.event_type == event_type)
    base = select(candidates.c.user_id).distinct().where(candidates.c.user_id.not_in(muted))
    if exclude_user_id is not None:
        base = base.where(candidates.c.user_id != exclude_user_id)
    # Users told of the same post another way (mentioned in it), so they hear of it once.
    told = [int(i) for i in audience.get("except") or []]
    if told:
        base = base.where(candidates.c.user_id.not_in(told))
    after = 0
    while True:
        batch = list(
            db.session.scalars(
                base.where(candidates.c.user_id > after).order_by(candidates.c.user_id).limit(batch_size)
            )
        )
        if not batch:
            return
        yield batch
        after = batch[-1]
