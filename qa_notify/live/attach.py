"""Attach to a user's live channel, then replay what they missed: one way in for the stream and the long-poll.

Subscribing first (confirmed by the broker) and reading the backlog second is what makes
the switch from replay to live free of gaps; the caller drops live events the backlog
already had. A stream follows two Redis streams, the user's and the broadcast stream
(events for everyone, filtered here for the user), so its position has a half for each.
Refusals are answered the same way for both: 429 past the user's stream quota, 503 while
Redis cannot be reached.
"""

from __future__ import annotations

import logging

import redis
from flask_login import current_user

from ..events.announce import muted_types
from ..jsonapi import APIError
from .hub import get_registry
from .registry import NOTHING_MUTED, Registry, Subscription, TooManyStreams
from .replay import BEGINNING, NOTHING_YET, Backlog, Replay, SharedEvent, StreamEvent, merge, parse_position

log = logging.getLogger(__name__)

UNAVAILABLE = "notifications are briefly unavailable; retrying"


def listener() -> dict:
    """Return what the live side needs of the logged-in user to filter events for everyone:
    their role and muted types. Called while the request still holds its database session;
    a change of either reaches the open streams as a control message (a role change ends them)."""
    return {"role": current_user.role, "muted": frozenset(muted_types(current_user.id))}


def attach_and_replay(
    user_id: int,
    session_id: str | None,
    last_id: str | None,
    *,
    role: str | None = None,
    muted: frozenset[str] = NOTHING_MUTED,
    read_newest: bool = False,
) -> tuple[Registry, Subscription, Replay]:
    """Attach a subscription for ``user_id`` (of ``role``, muting ``muted``), then read their
    events after ``last_id`` (a position, checked by the caller).

    With no ``last_id`` nothing is replayed and the feed starts now (every live event
    counts); ``read_newest`` then still reads the newest id of the user's stream, as a
    cursor for the next request. Raise ``APIError`` 429 or 503; the caller detaches the
    subscription when done.
    """
    registry = get_registry()
    try:
        sub = registry.attach(user_id, session_id, role=role, muted=muted)
    except TooManyStreams:
        raise APIError(429, "too many open notification streams for this user") from None
    except redis.RedisError:
        log.warning("stream for user %s refused: Redis unavailable", user_id, exc_info=True)
        raise APIError(503, UNAVAILABLE) from None
    try:
        return registry, sub, read_since(registry, sub, last_id, read_newest=read_newest)
    except APIError:
        registry.detach(sub)
        raise


def read_since(registry: Registry, sub: Subscription, last_id: str | None, *, read_newest: bool = False) -> Replay:
    """Return what ``sub``'s user missed after ``last_id``, both streams; ``APIError`` 503 while
    Redis cannot be reached.

    A half missing from ``last_id`` replays nothing of its stream: the user's starts now
    (or, with ``read_newest``, at its newest id), the broadcasts at the newest this process
    knew when ``sub`` attached.
    """
    user, broadcast = parse_position(last_id) if last_id else (None, None)
    broker = registry.broker
    try:
        mine = broker.replay(sub.user_id, user) if user or read_newest else NOTHING_YET
        if broadcast is None:
            shared = Backlog([], False, sub.broadcast_from)
        else:
            everyone = broker.replay_broadcasts(broadcast)
            wanted: list[StreamEvent] = [e for e in everyone.events if isinstance(e, SharedEvent) and sub.wants(e)]
            shared = Backlog(wanted, everyone.gap, everyone.last_id)
    except redis.RedisError:
        log.warning("stream for user %s refused: Redis unavailable", sub.user_id, exc_info=True)
        raise APIError(503, UNAVAILABLE) from None
    if read_newest and user is None and mine.last_id is None:
        mine = Backlog([], False, BEGINNING)  # the user's stream is empty: the next request reads all of it
    return merge(mine, user, shared, broadcast)
