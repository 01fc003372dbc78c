"""Read a user's Redis stream back: the events they missed since their last event id.

The write side (``qa_notify.events.bus``) appends each event to the user's capped stream;
an entry's id is the SSE event id, so it only grows, per user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis

from ..events import channels


@dataclass(frozen=True)
class StreamEvent:
    """One event read back from a user's stream or channel."""

    id: str
    type: str
    data: str

    @property
    def sort_key(self) -> tuple[int, int]:
        """Return the stream id as a comparable pair."""
        return parse_event_id(self.id)


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


@dataclass(frozen=True)
class Backlog:
    """What a user missed: the events after their last id, or ``gap`` when some were dropped."""

    events: list[StreamEvent]
    gap: bool
    last_id: str | None


NOTHING_YET = Backlog([], False, None)


def replay_since(r: redis.Redis, user_id: int, last_id: str | None) -> Backlog:
    """Return the events after ``last_id`` in ``user_id``'s stream, oldest first.

    ``gap`` is True when ``last_id`` is older than what the stream still holds (trimmed,
    expired or wiped): the caller must tell the page to refetch its inbox.
    """
    key = channels.user_stream(user_id)
    if last_id is None:
        return Backlog([], False, _newest_id(r, key))
    oldest = _entries(r.xrange(key, count=1))
    if not oldest or parse_event_id(last_id) < parse_event_id(oldest[0][0]):
        return Backlog([], True, _newest_id(r, key) or last_id)
    entries = _entries(r.xrange(key, min="(" + last_id))
    events = [StreamEvent(eid, fields.get("t", "message"), fields.get("d", "{}")) for eid, fields in entries]
    return Backlog(events, False, events[-1].id if events else last_id)


def _newest_id(r: redis.Redis, key: str) -> str | None:
    newest = _entries(r.xrevrange(key, count=1))
    return newest[0][0] if newest else None


Entry = tuple[str, dict[str, str]]


def _entries(reply) -> list[Entry]:
    """Type a stream reply as what a client that decodes responses returns: (id, fields) pairs."""
    return cast(list[Entry], reply)
