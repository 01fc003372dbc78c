"""An in-process broker: live channels and history in memory, for one process and for unit tests.

It behaves as the Redis brokers do towards the registry: a subscription is confirmed,
``push`` appends to a user's capped history and publishes on their channel in one step
(as ``events.bus`` does with XADD + SPUBLISH), ``broadcast`` does the same once for
everyone, ``publish`` sends a raw channel message (a control message), and ``cut`` /
``reconnect`` play a broken connection, after which the streams are resumed and re-read
the history.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque

from .broker import BrokerHandler, dispatch
from .replay import BEGINNING, Backlog, SharedEvent, StreamEvent, parse_event_id


class MemoryBroker:
    """Users' live channels and their last ``maxlen`` events, in this process."""

    def __init__(self, maxlen: int = 1000) -> None:
        self.maxlen = maxlen
        self.handler: BrokerHandler | None = None
        self._lock = threading.Lock()
        self._subscribed: set[int] = set()
        self._cut: set[int] = set()
        self._history: dict[int, deque[StreamEvent]] = {}
        self._added: dict[int, int] = {}  # events ever appended per user, kept or trimmed
        self._broadcasts: deque[StreamEvent] = deque(maxlen=maxlen)
        self._broadcasts_added = 0
        self._broadcasts_carried = self._broadcasts_cut = False
        self._last_id = (0, 0)
        self.connected = True

    def bind(self, handler: BrokerHandler) -> None:
        """Hand everything that arrives to ``handler`` from now on."""
        self.handler = handler

    def subscribe(self, user_id: int) -> None:
        """Carry ``user_id``'s channel (confirmed at once while connected)."""
        with self._lock:
            self._subscribed.add(user_id)
            if not self.connected:
                self._cut.add(user_id)

    def wait_confirmed(self, user_id: int, timeout: float) -> bool:
        """True at once while connected; False (after ``timeout``) while cut off."""
        if self.connected:
            return True
        time.sleep(timeout)
        return self.connected

    def unsubscribe(self, user_id: int) -> None:
        """Stop carrying ``user_id``'s channel."""
        with self._lock:
            self._subscribed.discard(user_id)
            self._cut.discard(user_id)

    def replay(self, user_id: int, last_id: str | None) -> Backlog:
        """Return what ``user_id`` missed since ``last_id`` (the same rules as ``replay.replay_since``)."""
        with self._lock:
            history, added = list(self._history.get(user_id, ())), self._added.get(user_id, 0)
        return _since(history, added, last_id, lost_is_gap=True)

    def subscribe_broadcasts(self) -> None:
        """Carry the broadcast channel (confirmed at once while connected)."""
        with self._lock:
            self._broadcasts_carried = True
            self._broadcasts_cut = not self.connected

    def wait_broadcasts_confirmed(self, timeout: float) -> bool:
        """True at once while connected; False (after ``timeout``) while cut off."""
        return self.wait_confirmed(0, timeout)

    def replay_broadcasts(self, last_id: str | None) -> Backlog:
        """Return the events for everyone since ``last_id`` (the rules of ``replay.replay_broadcasts``)."""
        with self._lock:
            history, added = list(self._broadcasts), self._broadcasts_added
        return _since(history, added, last_id, lost_is_gap=False)

    def newest_broadcast(self) -> str:
        """Return the newest broadcast id, or ``BEGINNING`` before the first."""
        with self._lock:
            return self._broadcasts[-1].id if self._broadcasts else BEGINNING

    def is_connected(self) -> bool:
        """True unless ``cut`` played a broken connection."""
        return self.connected

    def connection_count(self) -> int:
        """Return 1 while connected, else 0."""
        return int(self.connected)

    def stop(self) -> None:
        """Nothing to stop: there is no connection."""

    # -- the write side, in memory --------------------------------------------------------

    def push(self, user_id: int, event_type: str, data: dict) -> str:
        """Append an event to ``user_id``'s history and publish it on their channel; return its id."""
        body = json.dumps(data, separators=(",", ":"))
        with self._lock:
            event = StreamEvent(self._next_id(), event_type, body)
            self._history.setdefault(user_id, deque(maxlen=self.maxlen)).append(event)
            self._added[user_id] = self._added.get(user_id, 0) + 1
        self.publish(user_id, f"{event.id}\n{event.type}\n{event.data}")
        return event.id

    def broadcast(self, event_type: str, data: dict, role: str | None = None, author_id: int | None = None) -> str:
        """Append an event for everyone (or ``role``) to the broadcast history and publish it once."""
        body = json.dumps(data, separators=(",", ":"))
        with self._lock:
            event = SharedEvent(self._next_id(), event_type, body, role, author_id)
            self._broadcasts.append(event)
            self._broadcasts_added += 1
            live = self._broadcasts_carried and self.connected
        if live and self.handler is not None:
            self.handler.deliver_broadcast(event)
        return event.id

    def _next_id(self) -> str:
        """Return a new stream id: the time in ms, and a sequence within the same ms (lock held)."""
        now = int(time.time() * 1000)
        ms, seq = self._last_id
        self._last_id = (now, 0) if now > ms else (ms, seq + 1)
        return f"{self._last_id[0]}-{self._last_id[1]}"

    def publish(self, user_id: int, payload: str) -> None:
        """Send a raw message on ``user_id``'s channel (lost when nobody carries it, as in Redis)."""
        with self._lock:
            live = user_id in self._subscribed and self.connected
        if live and self.handler is not None:
            dispatch(self.handler, user_id, payload)

    def close_streams(self, user_id: int, reason: str, session_id: str | None = None) -> None:
        """Ask to close ``user_id``'s streams, as ``events.bus.close_user_streams`` does."""
        self.publish(user_id, "\nclose\n" + json.dumps({"reason": reason, "session_id": session_id}))

    # -- playing a broken connection ------------------------------------------------------

    def cut(self) -> None:
        """Break the connection: messages published now are lost to the subscribers."""
        with self._lock:
            self.connected = False
            self._cut |= self._subscribed
            self._broadcasts_cut = self._broadcasts_carried

    def reconnect(self) -> None:
        """Restore the connection: every channel cut off is confirmed again, its streams resumed."""
        with self._lock:
            self.connected = True
            resumed, self._cut = self._cut & self._subscribed, set()
            broadcasts, self._broadcasts_cut = self._broadcasts_cut, False
        for user_id in resumed:
            if self.handler is not None:
                self.handler.resume(user_id)
        if broadcasts and self.handler is not None:
            self.handler.resume_broadcasts()


def _since(history: list[StreamEvent], added: int, last_id: str | None, lost_is_gap: bool) -> Backlog:
    """The events of ``history`` (of ``added`` ever appended) after ``last_id``, by Redis' rules:
    a user's (``lost_is_gap``: no history at all is a gap) or the broadcast stream's."""
    newest = history[-1].id if history else None
    if last_id is None:
        return Backlog([], False, newest)
    after = parse_event_id(last_id)
    trimmed = added > len(history)
    if after == (0, 0) or not lost_is_gap:  # a gap only if entries after ``last_id`` were trimmed
        if trimmed and history and after < history[0].sort_key:
            return Backlog([], True, newest)
    elif not history or after < history[0].sort_key:
        return Backlog([], True, newest or last_id)
    events = [event for event in history if event.sort_key > after]
    return Backlog(events, False, events[-1].id if events else last_id)
