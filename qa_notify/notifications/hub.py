"""One Redis subscriber per web process, shared by every open stream in it.

flask-sse opens a pub/sub connection per client and falls over at Redis' ``maxclients``.
Here a single listener thread (a greenlet under gevent) holds one connection, subscribes
to the channel of each user with a stream open in this process, and hands each message to
that user's subscriptions through small bounded buffers. A subscription whose buffer
overflows (a client that stopped reading) is cut off so it can never hold others back.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections import deque

import redis

from ..events import channels
from ..events.bus import StreamEvent, parse_live_message
from .quota import StreamQuota

log = logging.getLogger(__name__)

# Put in a subscription's buffer after the listener lost its connection: messages may have
# been missed, so the stream must re-read the user's Redis stream from its last id.
GAP = object()


class Subscription:
    """One open stream's mailbox: the hub pushes, the stream waits and drains."""

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
    )

    def __init__(self, user_id: int, session_id: str | None, limit: int) -> None:
        self.token = secrets.token_hex(8)
        self.user_id = user_id
        self.session_id = session_id
        self._items: list = []  # a list, not a deque: an empty deque costs ~600 bytes per idle stream
        self._ready = threading.Event()
        self.limit = limit
        self.closed = False
        self.close_reason: str | None = None
        self.owner = None  # the greenlet serving this stream, when running under gevent

    def push(self, item) -> bool:
        """Queue ``item``; return False (and close) when the buffer is full."""
        if self.closed:
            return True
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

    def wait(self, timeout: float) -> list:
        """Wait up to ``timeout`` seconds; return what arrived (empty on timeout or close)."""
        if not self._items and not self.closed:
            self._ready.wait(timeout)
        self._ready.clear()
        items, self._items = self._items, []
        return items


class TooManyStreams(Exception):
    """The user already holds the most streams allowed."""


class Hub:
    """Fan messages from one Redis subscriber connection out to this process's streams."""

    POLL_SECONDS = 0.05
    YIELD_EVERY = 8

    def __init__(self, redis_url: str, buffer_size: int = 256, quota: StreamQuota | None = None) -> None:
        self.redis_url = redis_url
        self.buffer_size = buffer_size
        self.quota = quota
        self._subs: dict[int, set[Subscription]] = {}
        self._confirmed: set[str] = set()
        self._waiters: dict[str, threading.Event] = {}
        self._commands: deque[tuple[str, str]] = deque()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.connected = threading.Event()
        self.cut_off_count = 0
        self._release_later: deque[tuple[int, str]] = deque()

    # -- used by streams ------------------------------------------------------------------

    def total(self) -> int:
        """Return the number of open streams in this process."""
        return sum(len(s) for s in self._subs.values())

    def user_count(self) -> int:
        """Return the number of users with a stream open in this process."""
        return len(self._subs)

    def attach(self, user_id: int, session_id: str | None, timeout: float = 30.0) -> Subscription:
        """Open a subscription for ``user_id``; return once Redis confirmed the channel.

        Waiting for the confirmation is what makes "subscribe, then read the backlog" free
        of gaps. Raise ``TooManyStreams`` past the user's quota, ``redis.ConnectionError``
        if Redis cannot be reached in time.
        """
        self._ensure_started()
        sub = Subscription(user_id, session_id, self.buffer_size)
        if self.quota is not None and not self.quota.claim(user_id, sub.token):
            raise TooManyStreams(user_id)
        channel = channels.user_channel(user_id)
        with self._lock:
            first = user_id not in self._subs
            self._subs.setdefault(user_id, set()).add(sub)
            if first or channel not in self._confirmed:
                waiter = self._waiters.setdefault(channel, threading.Event())
                if first:
                    self._commands.append(("SUBSCRIBE", channel))
            else:
                waiter = None
        if waiter is not None and not waiter.wait(timeout):
            self.detach(sub)
            raise redis.ConnectionError("Redis did not confirm the subscription in time")
        return sub

    def detach(self, sub: Subscription, release_now: bool = True) -> None:
        """Remove a subscription; unsubscribe the user's channel when it was the last one.

        The stream's quota lease is returned at once (so a reconnecting browser is not
        refused), or by the lease keeper when called from the listener.
        """
        with self._lock:
            subs = self._subs.get(sub.user_id)
            if not subs or sub not in subs:
                return
            subs.discard(sub)
            if not subs:
                del self._subs[sub.user_id]
                channel = channels.user_channel(sub.user_id)
                self._confirmed.discard(channel)
                self._waiters.pop(channel, None)
                self._commands.append(("UNSUBSCRIBE", channel))
        if self.quota is None:
            return
        if release_now:
            try:
                self.quota.release(sub.user_id, sub.token)
                return
            except redis.RedisError:
                pass  # the keeper retries; the lease expires on its own anyway
        self._release_later.append((sub.user_id, sub.token))

    def close_user(self, user_id: int, reason: str, session_id: str | None = None) -> None:
        """Close ``user_id``'s streams in this process (only one session's, if given)."""
        for sub in list(self._subs.get(user_id, ())):
            if session_id is None or sub.session_id == session_id:
                sub.close(reason)

    def shutdown(self) -> None:
        """Close every stream (browsers reconnect elsewhere) and stop the listener."""
        self._stopping = True
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub.close("shutdown")

    # -- the listener ---------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="qa-notify-hub", daemon=True)
                    self._thread.start()
                    if self.quota is not None:
                        threading.Thread(target=self._keep_leases, name="qa-notify-leases", daemon=True).start()

    def _keep_leases(self) -> None:
        """Renew the stream leases of this process, and return those of closed streams."""
        interval = self.quota.lease_seconds / 3
        next_renewal = time.monotonic() + interval
        while not self._stopping:
            try:
                while self._release_later:
                    user_id, token = self._release_later.popleft()
                    self.quota.release(user_id, token)
                if time.monotonic() >= next_renewal:
                    next_renewal = time.monotonic() + interval
                    with self._lock:
                        leases = [(sub.user_id, sub.token) for subs in self._subs.values() for sub in subs]
                    self.quota.renew(leases)
            except redis.RedisError:
                log.warning("could not renew stream leases; they expire on their own", exc_info=True)
            time.sleep(0.2)

    def _run(self) -> None:
        backoff = 0.1
        while not self._stopping:
            try:
                self._listen()
                backoff = 0.1
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                self.connected.clear()
                log.warning("hub lost Redis (%s); reconnecting in %.1fs", exc, backoff)
                self._mark_gap()
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:  # never let the listener die: every stream depends on it
                self.connected.clear()
                log.exception("hub listener failed; restarting")
                self._mark_gap()
                time.sleep(backoff)

    def _mark_gap(self) -> None:
        with self._lock:
            self._confirmed.clear()
            # Re-subscribe everything on the next connection; streams re-read their backlog.
            self._commands.clear()
            for user_id in self._subs:
                self._commands.append(("SUBSCRIBE", channels.user_channel(user_id)))
            for subs in self._subs.values():
                for sub in subs:
                    sub.push(GAP)

    def _listen(self) -> None:
        # RESP2: pub/sub replies as plain arrays (redis-py 8 speaks RESP3 by default).
        pool = redis.ConnectionPool.from_url(self.redis_url, socket_keepalive=True, protocol=2, decode_responses=True)
        conn = pool.make_connection()
        conn.connect()
        try:
            conn.send_command("SUBSCRIBE", channels.CONTROL_CHANNEL)
            self.connected.set()
            while not self._stopping:
                self._flush_commands(conn)
                if not conn.can_read(timeout=self.POLL_SECONDS):
                    continue
                handled = 0
                while True:
                    self._handle(conn.read_response(disconnect_on_error=True))
                    handled += 1
                    if handled % self.YIELD_EVERY == 0:
                        # Let the streams drain their buffers during a burst; otherwise a
                        # healthy client could overflow while this loop holds the CPU.
                        time.sleep(0)
                    if not conn.can_read(timeout=0):
                        break
        finally:
            conn.disconnect()

    def _flush_commands(self, conn: redis.Connection) -> None:
        if not self._commands:
            return
        with self._lock:
            batch = list(self._commands)
            self._commands.clear()
        conn.send_packed_command(conn.pack_commands(batch))

    def _handle(self, response) -> None:
        kind, channel = response[0], response[1]
        if kind == "message":
            payload = response[2]
            if channel == channels.CONTROL_CHANNEL:
                self._handle_control(payload)
                return
            user_id = channels.user_id_from_channel(channel)
            subs = self._subs.get(user_id) if user_id is not None else None
            if not subs:
                return
            event: StreamEvent = parse_live_message(payload)
            for sub in list(subs):
                if not sub.push(event):
                    self._cut_off(sub)
        elif kind == "subscribe":
            with self._lock:
                self._confirmed.add(channel)
                waiter = self._waiters.pop(channel, None)
            if waiter is not None:
                waiter.set()

    def _handle_control(self, payload: str) -> None:
        try:
            message = json.loads(payload)
            if message.get("action") == "close":
                self.close_user(
                    int(message["user_id"]),
                    str(message.get("reason", "closed")),
                    message.get("session_id"),
                )
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed control message: %r", payload[:200])

    def _cut_off(self, sub: Subscription) -> None:
        """Drop a subscription whose client stopped reading; unblock its stuck writer."""
        log.info("cutting off a slow stream of user %s", sub.user_id)
        self.cut_off_count += 1
        self.detach(sub, release_now=False)
        owner = sub.owner
        if owner is not None:
            import gevent

            gevent.kill(owner)  # asynchronous: raises GreenletExit in the stuck writer
