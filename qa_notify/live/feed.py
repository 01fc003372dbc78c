"""This process's place in the broadcast stream: its channel carried, and the newest broadcast id seen.

Every web process subscribes to the one broadcast channel (events for everyone are written
once) as its first stream opens, and keeps the newest broadcast id in memory: from the
broadcast stream when it starts and after its channel was cut, then from each broadcast
that arrives. A new stream starts there, so opening one reads nothing more from Redis.
"""

from __future__ import annotations

import threading

import redis

from .broker import Broker
from .replay import BEGINNING, StreamEvent, parse_event_id


class BroadcastFeed:
    """The broadcast channel of one process's broker, and the newest id it has seen."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._newest = ((0, 0), BEGINNING)  # (key, id): replaced whole, never half-written
        self._lock = threading.Lock()  # one subscriber, one reader of the newest id at a time
        self._advancing = threading.Lock()
        self._carried = False
        self._confirmed = False
        self._fresh = False  # the newest id was read from Redis since the channel was last cut
        self._cuts = 0

    @property
    def newest(self) -> str:
        """Return the newest broadcast id known (``replay.BEGINNING`` before any)."""
        return self._newest[1]

    def follow(self, timeout: float) -> None:
        """Have the broadcast channel carried and the newest id known; raise ``redis.RedisError`` if not in time.

        The first stream of the process waits for the channel's confirmation, and then reads
        the newest id: subscribed first, read second, so no broadcast falls in between.
        Streams opening meanwhile wait for that read, so none starts before what exists.
        """
        if self._fresh:
            return
        with self._lock:
            if not self._carried:
                self.broker.subscribe_broadcasts()
                self._carried = True
        if not self._confirmed:
            if not self.broker.wait_broadcasts_confirmed(timeout):
                raise redis.ConnectionError("Redis did not confirm the broadcast subscription in time")
            self._confirmed = True
        with self._lock:
            if not self._fresh:
                cuts = self._cuts
                self._advance(self.broker.newest_broadcast())
                self._fresh = cuts == self._cuts  # cut during the read: read again next time

    def saw(self, event: StreamEvent) -> None:
        """A broadcast arrived live: streams attached from now on start after it."""
        self._advance(event.id)

    def lost_track(self) -> None:
        """The channel was cut and is back: read the newest id again before the next stream starts."""
        self._cuts += 1
        self._fresh = False

    def _advance(self, event_id: str) -> None:
        key = parse_event_id(event_id)
        with self._advancing:
            if key > self._newest[0]:
                self._newest = (key, event_id)
