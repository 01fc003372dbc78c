"""Attach to a user's live channel, then replay what they missed: one way in for the stream and the long-poll.

Subscribing first (confirmed by the broker) and reading the backlog second is what makes
the switch from replay to live free of gaps; the caller drops live events the backlog
already had. Refusals are answered the same way for both: 429 past the user's stream
quota, 503 while Redis cannot be reached.
"""

from __future__ import annotations

import logging

import redis

from ..jsonapi import APIError
from .hub import get_registry
from .registry import Registry, Subscription, TooManyStreams
from .replay import NOTHING_YET, Backlog

log = logging.getLogger(__name__)

UNAVAILABLE = "notifications are briefly unavailable; retrying"


def attach_and_replay(
    user_id: int, session_id: str | None, last_id: str | None, *, read_newest: bool = False
) -> tuple[Registry, Subscription, Backlog]:
    """Attach a subscription for ``user_id``, then read their events after ``last_id``.

    With no ``last_id`` the backlog is empty and the feed starts now (every live event
    counts); ``read_newest`` then still reads the newest id, as a cursor for the next
    request. Raise ``APIError`` 429 or 503; the caller detaches the subscription when done.
    """
    registry = get_registry()
    try:
        sub = registry.attach(user_id, session_id)
    except TooManyStreams:
        raise APIError(429, "too many open notification streams for this user") from None
    except redis.RedisError:
        log.warning("stream for user %s refused: Redis unavailable", user_id, exc_info=True)
        raise APIError(503, UNAVAILABLE) from None
    if last_id is None and not read_newest:
        return registry, sub, NOTHING_YET
    try:
        return registry, sub, read_backlog(registry, user_id, last_id)
    except APIError:
        registry.detach(sub)
        raise


def read_backlog(registry: Registry, user_id: int, last_id: str | None) -> Backlog:
    """Return ``user_id``'s events after ``last_id``; ``APIError`` 503 while Redis cannot be reached."""
    try:
        return registry.broker.replay(user_id, last_id)
    except redis.RedisError:
        log.warning("stream for user %s refused: Redis unavailable", user_id, exc_info=True)
        raise APIError(503, UNAVAILABLE) from None
