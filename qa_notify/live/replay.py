"""Read the Redis streams back: the events a user missed since their last event id.

The write side (``qa_notify.events.bus``) appends each event to the user's capped stream,
and each event for everyone once to the broadcast stream. A stream follows both, so its
SSE id is a *position* in both: ``<user stream id>~<broadcast stream id>``, each half only
growing (``Position``). The old plain form, a user stream id alone, is still accepted:
broadcasts then start from now.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import cast

import redis

from ..events import channels


@dataclass(frozen=True)
class StreamEvent:
    """One event read back from a user's stream or channel."""

    id: str
    type: str
    data: str

    @cached_property
    def sort_key(self) -> tuple[int, int]:
        """Return the stream id as a comparable pair (parsed once: a broadcast asks per stream)."""
        return parse_event_id(self.id)


@dataclass(frozen=True)
class SharedEvent(StreamEvent):
    """One event for everyone, from the broadcast stream or channel, with whom it is for."""

    role: str | None = None  # only users of this role; None: everyone
    author_id: int | None = None  # never its author


# Each half of a Redis stream id is an unsigned 64-bit number.
_MAX_ID_PART = 2**64 - 1


def parse_event_id(value: str) -> tuple[int, int]:
    """Parse a stream id ``"<ms>-<seq>"`` Redis would accept; raise ValueError for anything else.

    Only ASCII digits, each half at most 2**64 - 1: ``str.isdigit`` alone would let through
    other scripts' digits and numbers Redis refuses, which then failed as a Redis error (a
    misleading 503) instead of a bad-request answer.
    """
    ms, sep, seq = value.partition("-")
    if not sep or len(value) > 41 or not (ms + seq).isascii() or not ms.isdigit() or not seq.isdigit():
        raise ValueError(f"not an event id: {value[:60]!r}")
    parts = int(ms), int(seq)
    if max(parts) > _MAX_ID_PART:
        raise ValueError(f"not an event id: {value[:60]!r}")
    return parts


# A position before anything: the stream was empty (or did not exist) when it was taken.
BEGINNING = "0-0"
# The most a position can be: two ids and the "~" between them.
_MAX_POSITION = 2 * 41 + 1


def parse_position(value: str) -> tuple[str | None, str | None]:
    """Parse an SSE id into (user stream id, broadcast stream id); raise ValueError for anything else.

    ``"<u>~<b>"`` is a position in both streams, ``"~<b>"`` one whose user half is not known
    yet (nothing of the user's own was sent), ``"<u>"`` the old plain form (no broadcast half).
    """
    user, sep, broadcast = value.partition("~")
    if len(value) > _MAX_POSITION or (sep and not broadcast) or not (user or broadcast):
        raise ValueError(f"not an event id: {value[:60]!r}")
    for half in (user, broadcast):
        if half:
            parse_event_id(half)
    return user or None, broadcast or None


class Position:
    """Where a stream is in the user's stream and in the broadcast stream: its SSE id."""

    __slots__ = ("user", "user_key", "broadcast", "broadcast_key")

    def __init__(self, user: str | None, broadcast: str) -> None:
        self.user, self.user_key = user, parse_event_id(user) if user else (0, 0)
        self.broadcast, self.broadcast_key = broadcast, parse_event_id(broadcast)

    def take(self, event: StreamEvent) -> tuple[int, int] | None:
        """Move past ``event`` and return its key, or None when this position is past it already."""
        key = event.sort_key
        if isinstance(event, SharedEvent):
            if key <= self.broadcast_key:
                return None
            self.broadcast, self.broadcast_key = event.id, key
        else:
            if key <= self.user_key and self.user is not None:
                return None
            self.user, self.user_key = event.id, key
        return key

    def move_user(self, user: str) -> None:
        """Jump to ``user`` in the user's stream (after a gap: its newest id)."""
        self.user, self.user_key = user, parse_event_id(user)

    def move_broadcast(self, broadcast: str) -> None:
        """Jump to ``broadcast`` in the broadcast stream (after a gap: its newest id)."""
        self.broadcast, self.broadcast_key = broadcast, parse_event_id(broadcast)

    def __str__(self) -> str:
        return f"{self.user or ''}~{self.broadcast}"


@dataclass(frozen=True)
class Backlog:
    """What a user missed: the events after their last id, or ``gap`` when some were dropped."""

    events: list[StreamEvent]
    gap: bool
    last_id: str | None


NOTHING_YET = Backlog([], False, None)


@dataclass
class Replay:
    """What a stream sends before going live: a resync or not, then the events it missed in
    both streams (the broadcasts already filtered for its user), oldest first, from ``position``."""

    events: list[StreamEvent]
    gap: bool
    position: Position


def merge(user: Backlog, since_user: str | None, broadcasts: Backlog, since_broadcast: str | None) -> Replay:
    """Put a user's backlog and their broadcast backlog together, in id order.

    ``since_*`` are the halves of the position the client gave (None: not given). After a
    gap, or with no half given, a half starts at what its backlog names as its last id.
    """
    start_user = since_user if since_user and not user.gap else user.last_id
    start_broadcast = since_broadcast if since_broadcast and not broadcasts.gap else broadcasts.last_id
    events = sorted(user.events + broadcasts.events, key=lambda event: event.sort_key)
    return Replay(events, user.gap or broadcasts.gap, Position(start_user, start_broadcast or BEGINNING))


def replay_since(r: redis.Redis, user_id: int, last_id: str | None) -> Backlog:
    """Return the events after ``last_id`` in ``user_id``'s stream, oldest first.

    ``gap`` is True when ``last_id`` is older than what the stream still holds (trimmed,
    expired or wiped): the caller must tell the page to refetch its inbox.
    """
    return _read_since(r, channels.user_stream(user_id), last_id)


def replay_broadcasts(r: redis.Redis, last_id: str | None) -> Backlog:
    """Return the events for everyone after ``last_id`` (all users'), oldest first, in one round trip.

    ``gap`` only when entries were trimmed away and ``last_id`` is older than what is kept:
    the broadcast stream is one key for everyone, rarely written, so a stream that does not
    exist (never written, expired after a quiet week, wiped) or holds only entries after
    ``last_id`` means nothing was missed that can still be told.
    """
    key = channels.broadcast_stream()
    if last_id is None:
        return Backlog([], False, _newest_id(r, key))
    with r.pipeline(transaction=False) as pipe:
        pipe.xinfo_stream(key)
        pipe.xrange(key, min="(" + last_id)
        info, entries = pipe.execute(raise_on_error=False)
    if isinstance(entries, Exception):
        raise entries
    if isinstance(info, Exception):
        return Backlog([], False, last_id)  # no such key
    first = info.get("first-entry")
    trimmed = int(info["entries-added"]) > int(info["length"])
    if trimmed and first and parse_event_id(last_id) < parse_event_id(first[0]):
        return Backlog([], True, info["last-generated-id"])
    return _backlog(_entries(entries), last_id)


def newest_broadcast(r: redis.Redis) -> str:
    """Return the broadcast stream's newest id, or ``BEGINNING`` while it is empty."""
    return _newest_id(r, channels.broadcast_stream()) or BEGINNING


class RedisHistory:
    """The history half of a Redis broker: the user's stream and the broadcast stream, read back."""

    client: redis.Redis

    def replay(self, user_id: int, last_id: str | None) -> Backlog:
        """Return what ``user_id`` missed since ``last_id``, from their Redis stream."""
        return replay_since(self.client, user_id, last_id)

    def replay_broadcasts(self, last_id: str | None) -> Backlog:
        """Return the events for everyone since ``last_id``, from the broadcast stream."""
        return replay_broadcasts(self.client, last_id)

    def newest_broadcast(self) -> str:
        """Return the broadcast stream's newest id (``BEGINNING`` while it is empty)."""
        return newest_broadcast(self.client)


def _read_since(r: redis.Redis, key: str, last_id: str | None) -> Backlog:
    if last_id is None:
        return Backlog([], False, _newest_id(r, key))
    if parse_event_id(last_id) == (0, 0):
        return _read_from_beginning(r, key)
    oldest = _entries(r.xrange(key, count=1))
    if not oldest or parse_event_id(last_id) < parse_event_id(oldest[0][0]):
        return Backlog([], True, _newest_id(r, key) or last_id)
    return _backlog(_entries(r.xrange(key, min="(" + last_id)), last_id)


def _read_from_beginning(r: redis.Redis, key: str) -> Backlog:
    """All of a stream that was empty at the position: a gap only if it ever lost an entry."""
    try:
        info = r.xinfo_stream(key)
    except redis.ResponseError:  # no such key: nothing was ever added, or it expired
        return Backlog([], False, BEGINNING)
    if int(info["entries-added"]) > int(info["length"]):
        return Backlog([], True, info["last-generated-id"])
    return _backlog(_entries(r.xrange(key)), BEGINNING)


def _backlog(entries: list[Entry], last_id: str) -> Backlog:
    events = [_event(eid, fields) for eid, fields in entries]
    return Backlog(events, False, events[-1].id if events else last_id)


def _event(entry_id: str, fields: dict[str, str]) -> StreamEvent:
    """Return a stream entry as an event: for everyone when it names its audience (``a``, ``r``)."""
    event_type, data = fields.get("t", "message"), fields.get("d", "{}")
    if "a" not in fields:
        return StreamEvent(entry_id, event_type, data)
    author = fields["a"]
    return SharedEvent(entry_id, event_type, data, fields.get("r") or None, int(author) if author else None)


def _newest_id(r: redis.Redis, key: str) -> str | None:
    newest = _entries(r.xrevrange(key, count=1))
    return newest[0][0] if newest else None


Entry = tuple[str, dict[str, str]]


def _entries(reply) -> list[Entry]:
    """Type a stream reply as what a client that decodes responses returns: (id, fields) pairs."""
    return cast(list[Entry], reply)
