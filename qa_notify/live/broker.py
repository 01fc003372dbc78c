"""The broker interface: what the registry of streams needs from pub/sub and history.

Modelled on Centrifugo's engine split: a *broker* carries each user's live channel and
keeps their history (replay); the *registry* (``registry.py``) holds this process's
streams; *leases* (``leases.py``) count streams across processes. Implementations:

- ``subscriber.RedisBroker``: one Redis server, one subscriber connection;
- ``subscriber.ClusterBroker``: a Redis Cluster, one connection per master, following
  slot moves;
- ``memory.MemoryBroker``: in-process, for one process and for unit tests.

A broker hands what arrives on a user's channel to its ``BrokerHandler``: events, control
messages (close the streams, the user's muted types), and ``resume`` once a channel that
was cut off (a broken connection, a moved slot) is confirmed again, so the streams re-read
the history and miss nothing. Besides the users' channels, every broker carries the one
broadcast channel (events for everyone, written once) and reads the broadcast stream back.
"""

from __future__ import annotations

import json
import logging
from typing import Protocol

import redis

from .replay import Backlog, SharedEvent, StreamEvent

log = logging.getLogger(__name__)


class BrokerHandler(Protocol):
    """What a broker calls back (the registry of streams)."""

    def deliver(self, user_id: int, event: StreamEvent) -> None:
        """An event arrived on ``user_id``'s channel."""

    def close(self, user_id: int, reason: str, session_id: str | None) -> None:
        """Someone asked to close ``user_id``'s streams (of one session, if given)."""

    def resume(self, user_id: int) -> None:
        """``user_id``'s channel is confirmed again after a cut: messages may have been missed."""

    def mute(self, user_id: int, muted: frozenset[str]) -> None:
        """``user_id`` now mutes the event types ``muted``."""

    def deliver_broadcast(self, event: SharedEvent) -> None:
        """An event for everyone (or one role) arrived on the broadcast channel."""

    def resume_broadcasts(self) -> None:
        """The broadcast channel is confirmed again after a cut: broadcasts may have been missed."""


class Broker(Protocol):
    """Live channels and history, per user."""

    def bind(self, handler: BrokerHandler) -> None:
        """Hand everything that arrives to ``handler`` from now on."""

    def subscribe(self, user_id: int) -> None:
        """Start carrying ``user_id``'s channel (confirmation comes later, see ``wait_confirmed``).

        Raise ``redis.RedisError`` when no server can take the subscription now.
        """

    def wait_confirmed(self, user_id: int, timeout: float) -> bool:
        """Block until ``user_id``'s channel is confirmed; False after ``timeout`` seconds."""

    def unsubscribe(self, user_id: int) -> None:
        """Stop carrying ``user_id``'s channel."""

    def replay(self, user_id: int, last_id: str | None) -> Backlog:
        """Return what ``user_id`` missed since ``last_id`` (see ``replay.replay_since``)."""

    def subscribe_broadcasts(self) -> None:
        """Start carrying the broadcast channel (for good: every process needs it)."""

    def wait_broadcasts_confirmed(self, timeout: float) -> bool:
        """Block until the broadcast channel is confirmed; False after ``timeout`` seconds."""

    def replay_broadcasts(self, last_id: str | None) -> Backlog:
        """Return the events for everyone since ``last_id`` (see ``replay.replay_broadcasts``)."""

    def newest_broadcast(self) -> str:
        """Return the newest id of the broadcast stream (``replay.BEGINNING`` while it is empty)."""

    def is_connected(self) -> bool:
        """True when every connection this broker needs is up."""

    def connection_count(self) -> int:
        """Return the number of connections this broker holds up."""

    def stop(self) -> None:
        """Stop carrying anything (the process is going)."""


def make_broker(client: redis.Redis) -> Broker:
    """Return the Redis broker for ``client``: a cluster's or a single server's."""
    from ..events.connections import is_cluster_client
    from .subscriber import ClusterBroker, RedisBroker

    return ClusterBroker(client) if is_cluster_client(client) else RedisBroker(client)


def dispatch(handler: BrokerHandler, user_id: int, payload: str) -> None:
    """Decode one message of ``user_id``'s channel and hand it to ``handler``.

    An event is ``id\\ntype\\ndata`` (``events.bus`` writes it); a message with no event id
    in front, ``\\naction\\nJSON``, is a control message (``events.bus.close_user_streams``,
    ``events.bus.update_user_streams``).
    """
    if not payload.startswith("\n"):
        event_id, event_type, data = payload.split("\n", 2)
        handler.deliver(user_id, StreamEvent(event_id, event_type, data))
        return
    try:
        _, action, body = payload.split("\n", 2)
        message = json.loads(body)
        if action == "close":
            handler.close(user_id, str(message.get("reason", "closed")), message.get("session_id"))
        elif action == "muted":
            handler.mute(user_id, frozenset(str(t) for t in message))
    except (ValueError, TypeError, AttributeError):
        log.warning("ignored a malformed control message: %r", payload[:200])


def dispatch_broadcast(handler: BrokerHandler, payload: str) -> None:
    """Decode one message of the broadcast channel, ``id\\ntype\\nrole\\nauthor\\ndata``, and hand it on."""
    try:
        event_id, event_type, role, author, data = payload.split("\n", 4)
        event = SharedEvent(event_id, event_type, data, role or None, int(author) if author else None)
    except ValueError:
        log.warning("ignored a malformed broadcast message: %r", payload[:200])
        return
    handler.deliver_broadcast(event)
