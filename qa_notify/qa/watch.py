"""Watch levels: how much a user hears of one question or topic (watching, normal, muted).

A question: ``watching`` is following it (a QuestionFollow row: every new answer),
``normal`` is not following it (you hear only what reaches you otherwise: your own
question's answers, topic and author follows, mentions), ``muted`` is nothing about it at
all (a WatchLevel row; it also ends the follow). A topic: ``watching`` is following it and
hearing of every answer in its questions too (a TopicFollow and a WatchLevel row),
``normal`` is following it (a TopicFollow row alone, as before), ``muted`` is nothing from
its questions (a WatchLevel row; it ends the follow). Unfollowing a topic drops it back to
not followed; following a muted question or topic unmutes it. The rule for who is then left
out of an event lives in ``events.recipients``; this module only stores the choice.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute

from ..extensions import db
from ..models import WATCH_LEVELS, QuestionFollow, TopicFollow, User, WatchLevel

# The follow row that stands for a kind's "being told": question -> watching, topic -> normal.
_FOLLOWS: dict[str, tuple[Any, InstrumentedAttribute[int], InstrumentedAttribute[int], str]] = {
    "question": (QuestionFollow, QuestionFollow.user_id, QuestionFollow.question_id, "question_id"),
    "topic": (TopicFollow, TopicFollow.user_id, TopicFollow.topic_id, "topic_id"),
}


def _stored_level(user_id: int, kind: str, target_id: int) -> str | None:
    """Return the WatchLevel row's level, or None without a row."""
    return db.session.scalar(
        select(WatchLevel.level).where(
            WatchLevel.user_id == user_id, WatchLevel.kind == kind, WatchLevel.target_id == target_id
        )
    )


def _follows(user_id: int, kind: str, target_id: int) -> bool:
    """True if the user has the follow row of this question or topic."""
    _, who, target, _ = _FOLLOWS[kind]
    return db.session.scalar(select(who).where(who == user_id, target == target_id)) is not None


def watch_level(user: User, kind: str, target_id: int) -> str:
    """Return ``user``'s level on the question or topic ``target_id`` (``normal`` for nobody)."""
    if not user.is_authenticated:
        return "normal"
    stored = _stored_level(user.id, kind, target_id)
    if stored is not None:
        return stored
    if kind == "question" and _follows(user.id, kind, target_id):
        return "watching"
    return "normal"


def watch_state(user: User, kind: str, target_id: int) -> dict:
    """Return the JSON form of a user's level on a question or topic (a topic's says if it is followed)."""
    state = {kind: target_id, "level": watch_level(user, kind, target_id)}
    if kind == "topic":
        state["following"] = user.is_authenticated and _follows(user.id, kind, target_id)
    return state


def set_watch_level(user: User, kind: str, target_id: int, level: str) -> str:
    """Set ``user``'s level on the question or topic ``target_id``; return it. Idempotent.

    ``level`` must be one of WATCH_LEVELS (callers check; a ValueError otherwise). The follow
    row and the WatchLevel row change in one commit, so an event resolved after it sees both.
    """
    if level not in WATCH_LEVELS or kind not in _FOLLOWS:
        raise ValueError(f"no watch level {kind!r}/{level!r}")
    follow = (kind == "question" and level == "watching") or (kind == "topic" and level != "muted")
    stored = level if level == "muted" or (kind == "topic" and level == "watching") else None
    for attempt in range(2):
        try:
            _write(user.id, kind, target_id, follow, stored)
            db.session.commit()
            break
        except IntegrityError:  # a concurrent request wrote the same row first: once more
            db.session.rollback()
            if attempt:
                raise
    return level


def _write(user_id: int, kind: str, target_id: int, follow: bool, stored: str | None) -> None:
    """Make the follow row and the WatchLevel row say ``follow`` and ``stored`` (not committed)."""
    model, who, target, target_field = _FOLLOWS[kind]
    if follow and not _follows(user_id, kind, target_id):
        db.session.add(model(**{"user_id": user_id, target_field: target_id}))
    elif not follow:
        db.session.execute(delete(model).where(who == user_id, target == target_id))
    db.session.execute(
        delete(WatchLevel).where(
            WatchLevel.user_id == user_id, WatchLevel.kind == kind, WatchLevel.target_id == target_id
        )
    )
    if stored is not None:
        db.session.add(WatchLevel(user_id=user_id, kind=kind, target_id=target_id, level=stored))
    db.session.flush()


def forget_contrary_level(user_id: int, kind: str, target_id: int, following: bool) -> None:
    """Drop a level that a follow button's choice contradicts (not committed).

    Following a muted question or topic unmutes it; unfollowing a watched topic stops
    watching it. Users have no levels; nothing changes for them.
    """
    if kind not in _FOLLOWS:
        return
    contrary = "muted" if following else "watching"
    db.session.execute(
        delete(WatchLevel).where(
            WatchLevel.user_id == user_id,
            WatchLevel.kind == kind,
            WatchLevel.target_id == target_id,
            WatchLevel.level == contrary,
        )
    )
