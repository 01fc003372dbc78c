"""Who must hear of an event: the follow graph turned into user ids, in batches.

Recipients are computed in the database, ordered by user id and read in keyset batches, so
an event for 100,000 followers never loads them all at once; the recipients of many small
events are read together, one query per kind of audience. Who is left out (the actor, who
was told another way, who muted the type, who muted the question or its topic) is one rule,
``_exclude``, for both; an event for everyone says the same rule in SQL (``everyone_select``),
for one bulk insert.

Watch levels (qa.watch): a topic's watchers are one more source of a new answer's
audience; whoever muted the question an event is about, or one of its topics without
watching the question itself, is left out of it, whatever made them a candidate (a follow,
being the asker, a mention). Levels are read in ONE query per batch of candidates
(``_silenced``), like muted types (``_muted``), never per recipient. A split fan-out's batch
tasks carry user ids resolved at dispatch; ``still_recipients`` applies the follow graph and
both mute rules to them again when they run, so a mute or an unfollow stops what is queued.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    CompoundSelect,
    Select,
    and_,
    bindparam,
    exists,
    func,
    select,
    true,
    union,
    union_all,
)
from sqlalchemy.orm import InstrumentedAttribute

from ..extensions import db
from ..models import (
    MutedType,
    Question,
    QuestionFollow,
    TopicFollow,
    User,
    UserFollow,
    WatchLevel,
    question_topics,
)
from .audiences import Audience, AudienceError, Everyone, PostAudience, QuestionFollowers, Users, parse_audience
from .types import preference_key

# Ids spread at most this many times their number apart are read as their range (``among``).
_DENSE = 4
# A topic's watchers hear of every answer in its questions (qa.watch).
_TOPIC_WATCHING = and_(WatchLevel.kind == "topic", WatchLevel.level == "watching")

# Audiences read per question: who follows it (and its asker), or its topics and its author.
_BY_QUESTION = ("new_question", "new_answer")


def _followers_of_questions(kind: str, question_ids: list[int] | BindParameter, keyed: bool = True) -> CompoundSelect:
    """Return a SELECT of who hears of each question's ``kind`` event: (``question_id``,
    ``user_id``) pairs, or ``user_id`` alone unless ``keyed`` (one question: a smaller union)."""

    def pick(question_id, user_id):
        columns = (question_id.label("question_id"), user_id.label("user_id"))
        return select(*columns) if keyed else select(columns[1])

    if kind != QuestionFollowers.kind:
        by_topic = (
            pick(question_topics.c.question_id, TopicFollow.user_id)
            .join(TopicFollow, TopicFollow.topic_id == question_topics.c.topic_id)
            .where(question_topics.c.question_id.in_(question_ids))
        )
        by_author = (
            pick(Question.id, UserFollow.follower_id)
            .join(UserFollow, UserFollow.followed_id == Question.author_id)
            .where(Question.id.in_(question_ids))
        )
        return union(by_topic, by_author)
    followers = pick(QuestionFollow.question_id, QuestionFollow.user_id).where(
        QuestionFollow.question_id.in_(question_ids)
    )
    author = pick(Question.id, Question.author_id).where(Question.id.in_(question_ids))
    watchers = (
        pick(question_topics.c.question_id, WatchLevel.user_id)
        .join(WatchLevel, and_(_TOPIC_WATCHING, WatchLevel.target_id == question_topics.c.topic_id))
        .where(question_topics.c.question_id.in_(question_ids))
    )
    return union(followers, author, watchers)


# One source of candidates: a SELECT of ``user_id`` and the column it is keyed on.
Source = tuple[Select[Any], InstrumentedAttribute[int]]


def _sources(audience: Audience) -> list[Source]:
    """Return where an audience's candidates come from, each readable in ``user_id`` order
    from an index (``(question_id, user_id)``, ``(topic_id, user_id)``, ...)."""
    if isinstance(audience, PostAudience):
        question = audience.question_id
        topics = list(
            db.session.scalars(select(question_topics.c.topic_id).where(question_topics.c.question_id == question))
        )
        if audience.kind == QuestionFollowers.kind:
            followers = select(QuestionFollow.user_id).where(QuestionFollow.question_id == question)
            asker = select(Question.author_id.label("user_id")).where(Question.id == question)
            watchers: list[Source] = [
                (select(WatchLevel.user_id).where(_TOPIC_WATCHING, WatchLevel.target_id == topic), WatchLevel.user_id)
                for topic in topics
            ]
            return [(followers, QuestionFollow.user_id), (asker, Question.author_id), *watchers]
        by_topic = [
            (select(TopicFollow.user_id).where(TopicFollow.topic_id == topic), TopicFollow.user_id) for topic in topics
        ]
        by_author = (
            select(UserFollow.follower_id.label("user_id"))
            .join(Question, Question.author_id == UserFollow.followed_id)
            .where(Question.id == question)
        )
        return [*by_topic, (by_author, UserFollow.follower_id)]
    if isinstance(audience, Everyone):
        query = select(User.id.label("user_id"))
        return [(query.where(User.role == audience.role) if audience.role else query, User.id)]
    if isinstance(audience, Users):
        return [(select(User.id.label("user_id")).where(User.id.in_(audience.user_ids)), User.id)]
    raise AudienceError(f"unknown audience kind {audience.kind!r}")


def _page(sources: list[Source], after: int, size: int) -> Select:
    """The next ``size`` candidates after ``after``, no duplicates, ascending.

    Each source reads its own index range (``> after``, in order, at most ``size``) before
    they are merged, so the last page of a million followers costs what the first does; a
    DISTINCT over the whole union, filtered outside, read all of it for every page.
    """
    firsts = [
        select(sub.c.user_id)
        for sub in (q.where(col > after).order_by(col).limit(size).subquery() for q, col in sources)
    ]
    merged = (union(*firsts) if len(firsts) > 1 else firsts[0]).subquery()
    return select(merged.c.user_id).distinct().order_by(merged.c.user_id).limit(size)


@dataclass(frozen=True)
class Addressed:
    """An event to resolve: its key (the outbox id), whom it is for (as stored, or parsed) and who acted."""

    key: int
    audience: Audience | dict
    event_type: str
    exclude_user_id: int | None


def dense_range(user_ids: list[int]) -> tuple[int, int] | None:
    """The lowest and highest of ``user_ids`` if they lie close together (a keyset batch's), else None."""
    if user_ids and max(user_ids) - min(user_ids) < _DENSE * len(user_ids):
        return min(user_ids), max(user_ids)
    return None


def among(column: InstrumentedAttribute[int], user_ids: list[int]) -> ColumnElement[bool]:
    """``column`` is one of ``user_ids``, said the cheap way: the ids of a keyset batch lie
    close together, and their range is one index range scan (the caller drops the few ids
    in it that are not in the batch), where 2,000 ids in an IN list are 2,000 lookups."""
    bounds = dense_range(user_ids)
    return column.between(*bounds) if bounds else column.in_(user_ids)


def among_bound(column: InstrumentedAttribute[int], dense: bool) -> ColumnElement[bool]:
    """``among`` with bound parameters, for a statement built once: the range ``lo``..``hi``
    if ``dense``, else the list ``ids``; ``among_params`` gives their values."""
    return column.between(bindparam("lo"), bindparam("hi")) if dense else column.in_(bindparam("ids", expanding=True))


def among_params(user_ids: list[int]) -> tuple[bool, dict[str, Any]]:
    """Return whether ``user_ids`` are dense (see ``among``) and the parameters of ``among_bound``."""
    bounds = dense_range(user_ids)
    return (True, {"lo": bounds[0], "hi": bounds[1]}) if bounds else (False, {"ids": list(user_ids)})


@functools.cache
def _muted_query(dense: bool) -> Select:
    return select(MutedType.user_id, MutedType.event_type).where(among_bound(MutedType.user_id, dense))


def _muted(user_ids: list[int]) -> set[tuple[int, str]]:
    """Return the (user, preference key) pairs these users turned off on every channel."""
    dense, params = among_params(user_ids)
    rows = db.session.connection().execute(_muted_query(dense), params)
    wanted = set(user_ids)
    return {(user_id, event_type) for user_id, event_type in rows if user_id in wanted}


def _question_of(audience: Audience | dict) -> int | None:
    """Return the question an event is about (a post's, a mention's), or None."""
    audience = parse_audience(audience)
    return audience.question_id if isinstance(audience, PostAudience | Users) else None


def _silenced(user_ids: list[int], question_ids: set[int]) -> set[tuple[int, int]]:
    """Return the (user, question) pairs of these users and questions that the user muted:
    the question itself, or one of its topics while not watching (following) the question.

    One query for all of them, whatever their number: a keyset batch's as their id range;
    a drain's scattered candidates not at all (the mutes of these few questions and their
    topics are read, and the users picked here), so it never carries a list of ids, however
    many the drained events have together.
    """
    if not user_ids or not question_ids:
        return set()
    dense, params = among_params(user_ids)
    params = {**(params if dense else {}), "questions": sorted(question_ids)}  # scattered ids: any user
    wanted = set(user_ids)
    rows = db.session.connection().execute(_silenced_query(dense), params)
    return {(user_id, question_id) for user_id, question_id in rows if user_id in wanted}


@functools.cache
def _silenced_query(dense: bool) -> CompoundSelect:
    """``_silenced``'s query, built once: users in the range ``lo``..``hi`` (or any), ``questions``."""
    in_range = WatchLevel.user_id.between(bindparam("lo"), bindparam("hi")) if dense else true()
    questions: BindParameter[int] = bindparam("questions", expanding=True)
    by_question = select(WatchLevel.user_id, WatchLevel.target_id.label("question_id")).where(
        WatchLevel.kind == "question",
        WatchLevel.level == "muted",
        WatchLevel.target_id.in_(questions),
        in_range,
    )
    watched = exists().where(
        QuestionFollow.user_id == WatchLevel.user_id, QuestionFollow.question_id == question_topics.c.question_id
    )
    by_topic = (
        select(WatchLevel.user_id, question_topics.c.question_id)
        .join(question_topics, question_topics.c.topic_id == WatchLevel.target_id)
        .where(
            WatchLevel.kind == "topic",
            WatchLevel.level == "muted",
            question_topics.c.question_id.in_(questions),
            in_range,
            ~watched,
        )
    )
    return union(by_question, by_topic)


def _exclude(
    event: Addressed, candidates: list[int], muted: set[tuple[int, str]], silenced: set[tuple[int, int]]
) -> list[int]:
    """Who of the candidates hears of ``event``: not the actor, not who was told of the same
    post another way (mentioned in it), not who muted its type, not who muted its question
    (``silenced``, see ``_silenced``). The one place of this rule."""
    told = parse_audience(event.audience).left_out()
    key = preference_key(event.event_type)
    question = _question_of(event.audience)
    return [
        uid
        for uid in candidates
        if uid != event.exclude_user_id
        and uid not in told
        and (uid, key) not in muted
        and (uid, question) not in silenced
    ]


def recipient_batches(
    audience: Audience | dict, event_type: str, exclude_user_id: int | None, batch_size: int
) -> Iterator[list[int]]:
    """Yield the recipients' user ids in ascending batches: no duplicates, no actor, no muters.

    ``audience`` may be an outbox row's JSON; raise AudienceError if it names no audience.
    """
    audience = parse_audience(audience)
    event = Addressed(0, audience, event_type, exclude_user_id)
    sources = _sources(audience)
    questions = _questions([event])
    after = 0
    while True:
        batch = list(db.session.connection().scalars(_page(sources, after, batch_size)).all())
        if not batch:
            return
        kept = _exclude(event, batch, _muted(batch), _silenced(batch, questions))
        if kept:
            yield kept
        after = batch[-1]


def _questions(events: list[Addressed]) -> set[int]:
    """Return the questions these events are about."""
    return {q for q in (_question_of(e.audience) for e in events) if q is not None}


def still_recipients(
    audience: Audience | dict, event_type: str, exclude_user_id: int | None, user_ids: list[int]
) -> list[int]:
    """Return those of ``user_ids`` (resolved earlier) who hear of the event now, ascending.

    A split fan-out's batch waits in the queue after its ids were read: who unfollowed,
    muted the question or its topic, or muted the type since is left out when it runs. One
    query for membership in the audience, one for each mute rule, for the whole batch.
    """
    audience = parse_audience(audience)
    if not user_ids or isinstance(audience, Everyone):
        return sorted(set(user_ids))
    members = [query.where(among(column, user_ids)) for query, column in _sources(audience)]
    wanted = set(user_ids)
    found = db.session.connection().scalars(union_all(*members) if len(members) > 1 else members[0]).all()
    candidates = sorted({uid for uid in found if uid in wanted})
    event = Addressed(0, audience, event_type, exclude_user_id)
    return _exclude(event, candidates, _muted(candidates), _silenced(candidates, _questions([event])))


def everyone_select(audience: Everyone, event_type: str, exclude_user_id: int | None) -> Select:
    """Return a SELECT of one column, the ids of the users an event for ``audience`` is for:
    every user (or every user of its role) but the actor and who muted ``event_type``.

    ``_exclude``'s rule in SQL (an audience for everyone leaves nobody out another way), so
    the inbox rows of a broadcast are one ``INSERT ... SELECT``, never read into Python.
    """
    muted = exists().where(MutedType.user_id == User.id, MutedType.event_type == preference_key(event_type))
    query = select(User.id).where(~muted)
    if audience.role:
        query = query.where(User.role == audience.role)
    if exclude_user_id is not None:
        query = query.where(User.id != exclude_user_id)
    return query


@dataclass
class Resolved:
    """The recipients of many events: each small one's, the ones to fan out on their own
    (more than a batch, or everyone), and the ones whose audience cannot be resolved."""

    recipients: dict[int, list[int]]
    apart: list[int]
    unresolved: dict[int, Exception]


def recipient_lists(events: list[Addressed], at_most: int) -> Resolved:
    """Resolve many events' recipients at once: one query per audience kind, one for muted
    types, one for muted questions and topics.

    An event with more than ``at_most`` candidates is left ``apart``, for
    ``recipient_batches``, and so is an event for everyone, for ``everyone_select``; the
    rule (``_exclude``) is the same either way. An event whose
    audience cannot be parsed is left ``unresolved``, with the reason.
    """
    resolved = Resolved({}, [], {})
    parsed = []
    for e in events:
        try:
            parsed.append(replace(e, audience=parse_audience(e.audience)))
        except AudienceError as exc:
            resolved.unresolved[e.key] = exc
    candidates = _small_candidates(parsed, at_most, resolved.apart)
    everybody = sorted({uid for found in candidates.values() for uid in found})
    muted = _muted(everybody)
    silenced = _silenced(everybody, _questions([e for e in parsed if e.key in candidates]))
    for e in parsed:
        if e.key in candidates:
            resolved.recipients[e.key] = _exclude(e, candidates[e.key], muted, silenced)
    return resolved


def _small_candidates(events: list[Addressed], at_most: int, apart: list[int]) -> dict[int, list[int]]:
    """Return each event's candidates, read together; add to ``apart`` the events too large for that."""
    question_ids: dict[str, set[int]] = {kind: set() for kind in _BY_QUESTION}
    user_ids: set[int] = set()
    for e in events:
        if isinstance(e.audience, PostAudience):
            question_ids[e.audience.kind].add(e.audience.question_id)
        elif isinstance(e.audience, Users):
            user_ids.update(e.audience.user_ids)
    followers = {kind: _first_followers(kind, ids, at_most) for kind, ids in question_ids.items() if ids}
    existing = set(db.session.scalars(select(User.id).where(User.id.in_(user_ids)))) if user_ids else set()
    candidates: dict[int, list[int]] = {}
    for e in events:
        found: list[int] = []
        if isinstance(e.audience, PostAudience):
            found = followers[e.audience.kind].get(e.audience.question_id, [])
        elif isinstance(e.audience, Users):
            found = sorted(set(e.audience.user_ids) & existing)
        if isinstance(e.audience, Everyone) or len(found) > at_most:
            apart.append(e.key)
        else:
            candidates[e.key] = found
    return candidates


def _first_followers(kind: str, question_ids: set[int], at_most: int) -> dict[int, list[int]]:
    """Return each question's first ``at_most + 1`` candidates, ascending: enough to tell a large audience."""
    found: dict[int, list[int]] = {}
    rows = db.session.execute(_first_followers_query(kind), {"questions": sorted(question_ids), "at_most": at_most})
    for question_id, user_id in rows:
        found.setdefault(question_id, []).append(user_id)
    return found


@functools.cache
def _first_followers_query(kind: str) -> Select:
    """``_first_followers``' query for one kind of audience, built once (``questions``, ``at_most``)."""
    pairs = _followers_of_questions(kind, bindparam("questions", expanding=True)).subquery()
    rank = func.row_number().over(partition_by=pairs.c.question_id, order_by=pairs.c.user_id)
    numbered = select(pairs.c.question_id, pairs.c.user_id, rank.label("n")).subquery()
    return (
        select(numbered.c.question_id, numbered.c.user_id)
        .where(numbered.c.n <= bindparam("at_most") + 1)
        .order_by(numbered.c.question_id, numbered.c.user_id)
    )
