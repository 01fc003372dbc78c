"""This process's open streams: which user holds which subscriptions, and handing them what arrives.

The hub of connections in Centrifugo's split: it knows nothing of Redis. It asks its
broker (``broker.py``) to carry a user's channel while that user has a stream open here,
hands each event to that user's subscriptions through small bounded buffers, and cuts off
a subscription whose buffer overflows (a client that stopped reading) so it can never
hold others back. Stream leases (``leases.py``) are claimed on attach and given back on
detach.

An event for everyone arrives once per process, on the broadcast channel: the registry
hands it to each subscription whose user it is for (``Subscription.wants``: their role,
not its author, not muted), and keeps the newest broadcast id it has seen, where a new
stream starts (``BroadcastFeed``), so opening a stream reads nothing more from Redis.
"""

from __future__ import annotations

import logging
import secrets
import threading

import redis

from ..events.types import preference_key
from ..metrics import instruments
from .broker import Broker
from .feed import BroadcastFeed
from .heartbeats import Heartbeats
from .leases import LeaseKeeper, Quota
from .replay import SharedEvent, StreamEvent
from .wire import DirectWriter

log = logging.getLogger(__name__)

# Put in a subscription's buffer once its channel is subscribed again after a break: messages
# may have been missed, so the stream must re-read the user's Redis stream from its last id.
GAP = object()
# The same for the broadcast channel: the stream re-reads the broadcast stream from its own last id.
BROADCAST_GAP = object()
NOTHING_MUTED: frozenset[str] = frozenset()


class Subscription:
    """One open stream's mailbox: the registry pushes, the stream waits and drains."""

    __slots__ = (
        "user_id",
        "session_id",
        "_items",
        "_ready",
        "limit",
        "closed",
        "close_reason",
        "owner",
        "token",
        "role",
        "muted",
        "broadcast_from",
        "writer",
        "parked",
    )

    def __init__(
        self, user_id: int, session_id: str | None, limit: int, role: str | None = None, muted=NOTHING_MUTED
    ) -> None:
        self.token = secrets.token_hex(8)
        self.user_id = user_id
        self.session_id = session_id
        self._items: list = []  # a list, not a deque: an empty deque costs ~600 bytes per idle stream
        self._ready = threading.Event()
        self.limit = limit
        self.closed = False
        self.close_reason: str | None = None
        self.owner = None  # the greenlet serving this stream, when running under gevent
        self.role = role  # the user's role and muted types, for events for everyone
        self.muted: frozenset[str] = muted or NOTHING_MUTED
        self.broadcast_from = ""  # the newest broadcast id when it was attached: where it starts
        self.writer: DirectWriter | None = None  # lent by a stream that may be written to directly
        self.parked = False  # its stream waits in ``wait`` (not sending, not reading Redis)

    def wants(self, event: SharedEvent) -> bool:
        """True when an event for everyone is for this stream's user: their role, not theirs, not muted.

        The write side's rule for the inbox rows (``events.recipients.everyone_select``), on
        what the stream knows of its user.
        """
        return (
            (event.role is None or event.role == self.role)
            and event.author_id != self.user_id
            and preference_key(event.type) not in self.muted
        )

    def push(self, item) -> bool:
        """Hand on ``item``; return False (and close) when the buffer is full.

        An event for a parked stream with nothing queued is sent at once on its socket
        (``wire.DirectWriter``); anything else is queued for the stream's greenlet.
        """
        if self.closed:
            return True
        if self.writer is not None and self.idle() and isinstance(item, StreamEvent):
            self.writer.send(self, item)
            return True
        return self.queue(item)

    def queue(self, item) -> bool:
        """Queue ``item`` for the stream's greenlet; return False (and close) when the buffer is full."""
        if len(self._items) >= self.limit:
            self.close("overflow")
            return False
        self._items.append(item)
        self._ready.set()
        return True

    def close(self, reason: str) -> None:
        """Mark closed and wake the stream; it ends after sending what ``reason`` calls for."""
        if not self.closed:
            self.closed = True
            self.close_reason = reason
            if reason == "overflow":
                self._items.clear()  # free the buffer now, the client will replay
            self._ready.set()

    def idle(self) -> bool:
        """True while its stream is parked with nothing queued: a direct write may go first."""
        return self.parked and not self._items and not self.closed

    def wait(self, timeout: float | None) -> list:
        """Wait up to ``timeout`` seconds (None: until woken); return what arrived (empty on timeout or close)."""
        if not self._items and not self.closed:
            self.parked = True
            try:
                self._ready.wait(timeout)
            finally:
                self.parked = False
        self._ready.clear()
        items, self._items = self._items, []
        return items


class TooManyStreams(Exception):
    """The user already holds the most streams allowed."""


class Registry:
    """Map each user with a stream open in this process to their subscriptions."""

    def __init__(self, broker: Broker, buffer_size: int = 256, quota: Quota | None = None, beat: float = 15.0) -> None:
        self.broker = broker
        self.heartbeats = Heartbeats(self, beat)  # for streams written to directly
        self.buffer_size = buffer_size
        self.leases = LeaseKeeper(quota, self.open_leases) if quota is not None else None
        self._subs: dict[int, set[Subscription]] = {}
        self._lock = threading.Lock()
        self.cut_off_count = 0
        self._gauges = instruments.stream_gauges()
        self.feed = BroadcastFeed(broker)
        broker.bind(self)

    def total(self) -> int:
        """Return the number of open streams in this process."""
        return sum(len(s) for s in self._subs.values())

    def user_count(self) -> int:
        """Return the number of users with a stream open in this process."""
        return len(self._subs)

    def subscriptions(self) -> list[Subscription]:
        """Return every open subscription of this process."""
        with self._lock:
            return [sub for subs in self._subs.values() for sub in subs]

    def open_leases(self) -> list[tuple[int, str]]:
        """Return (user id, lease token) of every open stream: what the lease keeper renews."""
        with self._lock:
            return [(sub.user_id, sub.token) for subs in self._subs.values() for sub in subs]

    def attach(self, user_id: int, session_id: str | None, timeout: float = 30.0, role: str | None = None,
               muted: frozenset[str] = NOTHING_MUTED) -> Subscription:  # fmt: skip
        """Open a subscription for ``user_id`` (of ``role``, muting ``muted``); return once the
        broker confirmed the channel.

        Waiting for the confirmation is what makes "subscribe, then read the backlog" free
        of gaps. Raise ``TooManyStreams`` past the user's quota, ``redis.RedisError`` if
        Redis cannot be reached in time.
        """
        self.feed.follow(timeout)
        sub = Subscription(user_id, session_id, self.buffer_size, role, muted)
        if self.leases is not None and not self.leases.claim(user_id, sub.token):
            raise TooManyStreams(user_id)
        try:
            with self._lock:
                sub.broadcast_from = self.feed.newest  # broadcasts after it reach this stream live
                first = user_id not in self._subs
                self._subs.setdefault(user_id, set()).add(sub)
                self._gauges.opened(first)
                if first:
                    self.broker.subscribe(user_id)
        except redis.RedisError:  # no master serves the slot right now (a failover)
            self.detach(sub)
            raise
        if not self.broker.wait_confirmed(user_id, timeout):
            self.detach(sub)
            raise redis.ConnectionError("Redis did not confirm the subscription in time")
        return sub

    def detach(self, sub: Subscription, release_now: bool = True) -> None:
        """Remove a subscription; stop carrying the user's channel when it was the last one.

        The stream's lease is returned at once (so a reconnecting browser is not refused),
        or by the lease keeper when called from the broker's listener.
        """
        with self._lock:
            subs = self._subs.get(sub.user_id)
            if not subs or sub not in subs:
                return
            subs.discard(sub)
            self._gauges.closed(not subs)
            if not subs:
                del self._subs[sub.user_id]
                self.broker.unsubscribe(sub.user_id)
        if self.leases is not None:
            self.leases.release(sub.user_id, sub.token, now=release_now)

    def close(self, user_id: int, reason: str, session_id: str | None = None) -> None:
        """Close ``user_id``'s streams in this process (only one session's, if given)."""
        for sub in list(self._subs.get(user_id, ())):
            if session_id is None or sub.session_id == session_id:
                sub.close(reason)

    def shutdown(self) -> None:
        """Close every stream (browsers reconnect elsewhere), stop the broker and the lease keeper."""
        self.broker.stop()
        self.heartbeats.stop()
        if self.leases is not None:
            self.leases.stop()
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub.close("shutdown")

    # -- what the broker calls --------------------------------------------------------------

    def deliver(self, user_id: int, event: StreamEvent) -> None:
        """Hand ``event`` to each of ``user_id``'s subscriptions; cut off those that stopped reading."""
        subs = self._subs.get(user_id)
        if not subs:
            return
        for sub in list(subs):
            if not sub.push(event):
                self._cut_off(sub)

    def resume(self, user_id: int) -> None:
        """``user_id``'s channel is back after a cut: each stream re-reads from its last id."""
        with self._lock:
            subs = list(self._subs.get(user_id, ()))
        for sub in subs:
            sub.push(GAP)

    def mute(self, user_id: int, muted: frozenset[str]) -> None:
        """``user_id`` changed their muted types: their streams here leave out broadcasts of those."""
        for sub in list(self._subs.get(user_id, ())):
            sub.muted = muted or NOTHING_MUTED

    def deliver_broadcast(self, event: SharedEvent) -> None:
        """Hand an event for everyone to each stream whose user it is for; cut off those that stopped reading.

        One pass over this process's streams (thousands): a few comparisons and a list
        append each; every stream formats its own frame (its id is its own position).
        """
        with self._lock:
            self.feed.saw(event)  # a stream attached from now on starts after it
        for sub in self.subscriptions():
            if sub.wants(event) and not sub.push(event):
                self._cut_off(sub)

    def resume_broadcasts(self) -> None:
        """The broadcast channel is back after a cut: every stream re-reads the broadcast stream."""
        self.feed.lost_track()
        for sub in self.subscriptions():
            sub.push(BROADCAST_GAP)

    def _cut_off(self, sub: Subscription) -> None:
        """Drop a subscription whose client stopped reading; unblock its stuck writer."""
        log.info("cutting off a slow stream of user %s", sub.user_id)
        self.cut_off_count += 1
        instruments.SLOW_CONSUMERS.inc()
        self.detach(sub, release_now=False)
        owner = sub.owner
        if owner is not None:
            import gevent

            gevent.kill(owner)  # asynchronous: raises GreenletExit in the stuck writer
