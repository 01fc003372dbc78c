"""Who must hear of an event, typed like the events; stored in the outbox as the JSON it always was.

Each audience is a small frozen dataclass whose ``kind`` is the ``"kind"`` of its JSON:
``{"kind": "new_question", "question_id": 3, "except": [5]}``. ``parse_audience`` reads that
JSON back, from new rows and from rows an older release wrote alike; ``events.recipients``
turns an audience into user ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar


class AudienceError(ValueError):
    """Raised for an audience description the fan-out cannot resolve."""


@dataclass(frozen=True)
class Audience:
    """Base class: a description of who must hear of an event."""

    kind: ClassVar[str] = "audience"

    def to_json(self) -> dict:
        """Return the JSON stored in the outbox row."""
        raise NotImplementedError

    def left_out(self) -> set[int]:
        """Return the users of this audience told of the event another way (none but for posts)."""
        return set()


@dataclass(frozen=True)
class PostAudience(Audience):
    """Who hears of a post in a question, less ``excluded``: who hears of it as a mention."""

    question_id: int
    excluded: list[int] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"kind": self.kind, "question_id": self.question_id, "except": list(self.excluded)}

    def left_out(self) -> set[int]:
        return set(self.excluded)


@dataclass(frozen=True)
class TopicAndAuthorFollowers(PostAudience):
    """Of a new question: who follows one of its topics or its author."""

    kind: ClassVar[str] = "new_question"


@dataclass(frozen=True)
class QuestionFollowers(PostAudience):
    """Of a new answer: who follows the question, and its asker."""

    kind: ClassVar[str] = "new_answer"


@dataclass(frozen=True)
class Everyone(Audience):
    """Every user, or every user with ``role``."""

    kind: ClassVar[str] = "everyone"
    role: str | None = None

    def to_json(self) -> dict:
        return {"kind": self.kind, "role": self.role} if self.role else {"kind": self.kind}


@dataclass(frozen=True)
class Users(Audience):
    """These users (those who still exist); ``question_id``: the question the event is about,
    if any (a mention), so a user who muted that question is left out (events.recipients)."""

    kind: ClassVar[str] = "users"
    user_ids: list[int]
    question_id: int | None = None

    def to_json(self) -> dict:
        stored: dict = {"kind": self.kind, "user_ids": list(self.user_ids)}
        if self.question_id is not None:
            stored["question_id"] = self.question_id
        return stored


def parse_audience(stored: Audience | dict) -> Audience:
    """Return the audience an outbox row's JSON describes; raise AudienceError if it names none."""
    if isinstance(stored, Audience):
        return stored
    kind = stored.get("kind") if isinstance(stored, dict) else None
    if not isinstance(kind, str) or kind not in _KINDS:
        raise AudienceError(f"unknown audience kind {kind!r}")
    try:
        if kind == Everyone.kind:
            return Everyone(role=stored.get("role") or None)
        if kind == Users.kind:
            about = stored.get("question_id")
            return Users(
                user_ids=[int(i) for i in stored.get("user_ids", [])], question_id=None if about is None else int(about)
            )
        excluded = [int(i) for i in stored.get("except") or []]
        return _KINDS[kind](question_id=int(stored["question_id"]), excluded=excluded)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise AudienceError(f"malformed {kind} audience: {type(exc).__name__}: {exc}") from None


_KINDS: dict[str, type] = {cls.kind: cls for cls in (TopicAndAuthorFollowers, QuestionFollowers, Everyone, Users)}
