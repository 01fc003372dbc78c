"""Typed notification events.

Each event type is a small frozen dataclass. Its ``type`` is the SSE event name the page
listens for (``addEventListener('new_answers')``); ``version`` lets consumers evolve.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import ClassVar

EVENT_VERSION = 1
# Names external producers may use for their own types: short, lowercase, no CR/LF.
EVENT_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}\Z")
MAX_GROUP_LENGTH = 80


@dataclass(frozen=True)
class Event:
    """Base class: a typed, versioned notification payload."""

    type: ClassVar[str] = "event"
    # False for live-only events that are never kept in the inbox.
    inbox: ClassVar[bool] = True

    def group_key(self) -> str | None:
        """Return the inbox group this event joins while unread, or None for a group of its own.

        Unread events with one key show as one inbox item ("bob and 4 others answered ...")
        and one coalesced toast; the key is computed once, when the event is emitted.
        """
        return None

    def payload(self) -> dict:
        """Return the JSON payload sent to the page and stored in the inbox (with its ``group``)."""
        group = self.group_key()
        return {"v": EVENT_VERSION, **asdict(self), **({"group": group} if group else {})}


@dataclass(frozen=True)
class NewQuestion(Event):
    """A question was asked in a topic you follow, or by a user you follow."""

    type: ClassVar[str] = "new_question"
    question_id: int
    title: str
    topics: list[str]
    author: str
    url: str


@dataclass(frozen=True)
class PostEvent(Event):
    """Something posted in a question's thread: the unread ones of a type and question are one inbox item."""

    question_id: int
    question_title: str
    answer_id: int | None
    author: str
    excerpt: str
    url: str

    def group_key(self) -> str:
        """Return ``<type>:question:<id>``: one group per question and type."""
        return f"{self.type}:question:{self.question_id}"


@dataclass(frozen=True)
class NewAnswers(PostEvent):
    """A question you follow got an answer. Plural on purpose: the page listens for ``new_answers``."""

    type: ClassVar[str] = "new_answers"


@dataclass(frozen=True)
class Mention(PostEvent):
    """Someone wrote ``@you`` in a question or an answer (``answer_id`` None for a question)."""

    type: ClassVar[str] = "mention"


@dataclass(frozen=True)
class BroadcastEvent(Event):
    """An admin's announcement."""

    type: ClassVar[str] = "broadcast"
    broadcast_id: int
    message: str
    author: str


@dataclass(frozen=True)
class CustomEvent(Event):
    """An event of a type named by an external producer, with its own payload.

    ``source`` says where it came from (the page shows it); it and the server's own fields
    are set after the producer's data, so no payload can override them.
    """

    type: ClassVar[str] = "custom"
    name: str
    data: dict = field(default_factory=dict)
    source: str | None = None

    def group_key(self) -> str | None:
        """A producer groups its events by giving them the same ``group`` string (1-80 characters)."""
        group = self.data.get("group")
        if isinstance(group, str) and 0 < len(group) <= MAX_GROUP_LENGTH:
            return f"{self.name}:{group}"
        return None

    def payload(self) -> dict:
        """Return the producer's payload with the server's fields (version, source) set last."""
        fields = {"v": EVENT_VERSION} if self.source is None else {"v": EVENT_VERSION, "source": self.source}
        return {**self.data, **fields}


@dataclass(frozen=True)
class ReadEvent(Event):
    """Live-only: some of your notifications were marked read (in another tab, maybe).

    ``unread`` True: they were marked unread again (the inbox's "Mark unread"); the page
    treats their groups as unread and takes ``unread_count`` for its badge either way.
    """

    type: ClassVar[str] = "read"
    inbox: ClassVar[bool] = False
    ids: list[int]
    all: bool
    unread_count: int
    unread: bool = False


@dataclass(frozen=True)
class PreferencesEvent(Event):
    """Live-only: your notification settings changed (in another tab, maybe).

    ``silent``: the preference keys (``preference_key``) whose in-app channel is off; the
    page keeps counting their events in the badge and inbox but shows no toast for them.
    """

    type: ClassVar[str] = "preferences"
    inbox: ClassVar[bool] = False
    silent: list[str]


BUILTIN_TYPES = (NewQuestion.type, NewAnswers.type, Mention.type, BroadcastEvent.type)
# Every type an external producer names is one row of the preferences: ``producers``.
PRODUCER_TYPES = "producers"
MUTEABLE_TYPES = (*BUILTIN_TYPES, PRODUCER_TYPES)
# Events the stream sends itself, never stored: the page must know them all.
RESYNC = "resync"
SERVER_CLOSED = "server_closed"
# Types only the stream itself sends; nobody else may name them.
STREAM_TYPES = (ReadEvent.type, PreferencesEvent.type, RESYNC, SERVER_CLOSED)


def preference_key(event_type: str) -> str:
    """Return the preferences row an event type falls under: its own, or ``producers``."""
    return event_type if event_type in BUILTIN_TYPES else PRODUCER_TYPES


# Payload fields the server sets on delivery or on every event; no producer may set them.
SERVER_FIELDS = ("notification_id", "v", "source")


def event_type_of(event: Event) -> str:
    """Return the wire name of ``event`` (a custom event's own name)."""
    return event.name if isinstance(event, CustomEvent) else event.type


def question_id_of(event: Event) -> int | None:
    """Return the id of the question ``event`` is about (answers, mentions, a new question), else None."""
    return event.question_id if isinstance(event, NewQuestion | PostEvent) else None


def excerpt(text: str, limit: int = 140) -> str:
    """Return ``text`` collapsed to one line and cut to ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "\u2026"
