"""Who must hear of an event: the follow graph turned into user ids, in batches.

Recipients are computed in the database, ordered by user id and read in keyset batches, so
an event for 100,000 followers never loads them all at once; the recipients of many small
events are read together, in one query.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Select, literal, select, union, union_all

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


def _recipients(audience: dict, event_type: str, exclude_user_id: int | None) -> Select:
    """Return a SELECT of the recipients' ``user_id``: no duplicates, no actor, no muters."""
    candidates = _candidates(audience).subquery()
    muted = select(MutedType.user_id).where(MutedType.event_type == event_type)
    query = select(candidates.c.user_id).distinct().where(candidates.c.user_id.not_in(muted))
    if exclude_user_id is not None:
        query = query.where(candidates.c.user_id != exclude_user_id)
    # Users told of the same post another way (mentioned in it), so they hear of it once.
    told = [int(i) for i in audience.get("except") or []]
    if told:
        query = query.where(candidates.c.user_id.not_in(told))
    return query


def recipient_batches(
    audience: dict, event_type: str, exclude_user_id: int | None, batch_size: int
) -> Iterator[list[int]]:
    """Yield the recipients' user ids in ascending batches: no duplicates, no actor, no muters."""
    base = _recipients(audience, event_type, exclude_user_id)
    user_id = base.selected_columns.user_id
    after = 0
    while True:
        batch = list(db.session.scalars(base.where(user_id > after).order_by(user_id).limit(batch_size)))
        if not batch:
            return
        yield batch
        after = batch[-1]


@dataclass(frozen=True)
class Addressed:
    """One event to resolve among many: its key (the outbox id) and whom it is for."""

    key: int
    audience: dict
    event_type: str
    exclude_user_id: int | None


# Events per statement: each is one term of a UNION ALL (SQLite allows 500 terms).
EVENTS_PER_QUERY = 100


def recipient_lists(events: list[Addressed], at_most: int) -> tuple[dict[int, list[int]], dict[int, Exception]]:
    """Resolve many events' recipients at once: one query per EVENTS_PER_QUERY events.

    Return each event's recipients (ascending; the first ``at_most + 1`` only, so
    ``len(...) > at_most`` tells an event that needs more than one batch) and, apart, the
    events whose audience cannot be resolved at all, with the reason. The rule is
    ``recipient_batches``'s, so both agree on who hears of what.
    """
    found: dict[int, list[int]] = {}
    unresolved: dict[int, Exception] = {}
    terms = []
    for e in events:
        try:
            one = _recipients(e.audience, e.event_type, e.exclude_user_id)
        except (AudienceError, KeyError, TypeError, ValueError) as exc:
            unresolved[e.key] = exc
            continue
        first = one.order_by(one.selected_columns.user_id).limit(at_most + 1).subquery()
        terms.append(select(literal(e.key).label("key"), first.c.user_id))
        found[e.key] = []
    for start in range(0, len(terms), EVENTS_PER_QUERY):
        for key, user_id in db.session.execute(union_all(*terms[start : start + EVENTS_PER_QUERY])):
            found[key].append(user_id)
    for users in found.values():
        users.sort()
    return found, unresolved
