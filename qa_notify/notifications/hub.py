"""One Redis subscriber connection per server (per cluster master), shared by every stream.

flask-sse opens a pub/sub connection per client and falls over at Redis' ``maxclients``.
Here one listener thread (a greenlet under gevent) per Redis master holds one connection,
subscribes (sharded pub/sub, ``SSUBSCRIBE``) to the channel of each user with a stream open
in this process, and hands each message to that user's subscriptions through small
bounded buffers. A subscription whose buffer overflows (a client that stopped reading) is
cut off so it can never hold others back. Redis connections per web process: one per
master here, whatever the number of streams.

When a connection breaks, or a cluster moves a slot (failover, resharding), the affected
channels are subscribed again on whichever master now owns them; once a channel is
confirmed again, its streams get ``GAP`` and re-read the user's Redis stream from their
last id, so nothing published meanwhile is lost and nothing is sent twice.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections import deque

import redis
from redis.exceptions import MovedError

from ..events import channels
from ..events.bus import StreamEvent, parse_live_message
from ..events.connections import is_cluster_client, owner_of, refresh_topology, subscriber_connection
from ..metrics import instruments
from .quota import StreamQuota

log = logging.getLogger(__name__)

# Put in a subscription's buffer once its channel is subscribed again after a break: messages
# may have been missed, so the stream must re-read the user's Redis stream from its last id.
GAP = object()
Address = tuple[str, int]


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


class _Shard:
    """One subscriber connection to one Redis server, and the channels it carries."""

    __slots__ = ("address", "commands", "channels", "unsubscribing", "connected", "retired")

    def __init__(self, address: Address) -> None:
        self.address = address
        self.commands: deque[tuple[str, str]] = deque()
        self.channels: set[str] = set()
        # Our own SUNSUBSCRIBEs not yet answered, per channel: their answers are not moves.
        self.unsubscribing: dict[str, int] = {}
        self.connected = threading.Event()
        self.retired = False


class Hub:
    """Fan messages from one subscriber connection per Redis master out to this process's streams."""

    POLL_SECONDS = 0.05
    YIELD_EVERY = 8

    def __init__(self, client: redis.Redis, buffer_size: int = 256, quota: StreamQuota | None = None) -> None:
        self.client = client
        self.buffer_size = buffer_size
        self.quota = quota
        self._cluster = is_cluster_client(client)
        self._subs: dict[int, set[Subscription]] = {}
        self._confirmed: set[str] = set()
        self._waiters: dict[str, threading.Event] = {}
        # Channels that were cut off (broken connection, moved slot): their streams get GAP
        # once the channel is confirmed again, not before, so the re-read misses nothing.
        self._gapped: set[str] = set()
        self._shards: dict[Address, _Shard] = {}
        self._shard_of: dict[str, Address] = {}
        self._lock = threading.Lock()
        self._keeper: threading.Thread | None = None
        self._stopping = False
        self.cut_off_count = 0
        self._gauges = instruments.stream_gauges()
        self._release_later: deque[tuple[int, str]] = deque()

    # -- used by streams ------------------------------------------------------------------

    def total(self) -> int:
        """Return the number of open streams in this process."""
        return sum(len(s) for s in self._subs.values())

    def user_count(self) -> int:
        """Return the number of users with a stream open in this process."""
        return len(self._subs)

    def is_connected(self) -> bool:
        """True when every subscriber connection this process needs is up."""
        shards = [s for s in self._shards.values() if not s.retired]
        return bool(shards) and all(s.connected.is_set() for s in shards)

    def connection_count(self) -> int:
        """Return the number of subscriber connections (one per Redis master in use)."""
        return sum(1 for s in self._shards.values() if not s.retired and s.connected.is_set())

    def attach(self, user_id: int, session_id: str | None, timeout: float = 30.0) -> Subscription:
        """Open a subscription for ``user_id``; return once Redis confirmed the channel.

        Waiting for the confirmation is what makes "subscribe, then read the backlog" free
        of gaps. Raise ``TooManyStreams`` past the user's quota, ``redis.RedisError`` if
        Redis cannot be reached in time.
        """
        self._start_keeper()
        sub = Subscription(user_id, session_id, self.buffer_size)
        if self.quota is not None and not self.quota.claim(user_id, sub.token):
            raise TooManyStreams(user_id)
        channel = channels.user_channel(user_id)
        try:
            with self._lock:
                first = user_id not in self._subs
                self._subs.setdefault(user_id, set()).add(sub)
                self._gauges.opened(first)
                waiter = None
                if first or channel not in self._confirmed:
                    waiter = self._waiters.setdefault(channel, threading.Event())
                    if first:
                        self._subscribe(channel, owner_of(self.client, channel))
        except redis.RedisError:  # no master serves the slot right now (a failover)
            self.detach(sub)
            raise
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
            self._gauges.closed(not subs)
            if not subs:
                del self._subs[sub.user_id]
                self._unsubscribe(channels.user_channel(sub.user_id))
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
        """Close every stream (browsers reconnect elsewhere) and stop the listeners."""
        self._stopping = True
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub.close("shutdown")

    # -- channels and shards (called with the lock held) ------------------------------------

    def _subscribe(self, channel: str, address: Address) -> None:
        shard = self._shards.get(address)
        if shard is None or shard.retired:
            shard = self._shards[address] = _Shard(address)
            threading.Thread(target=self._run, args=(shard,), name=f"qa-notify-hub-{address[1]}", daemon=True).start()
        shard.channels.add(channel)
        self._shard_of[channel] = address
        shard.commands.append(("SSUBSCRIBE", channel))

    def _unsubscribe(self, channel: str) -> None:
        self._confirmed.discard(channel)
        self._gapped.discard(channel)
        self._waiters.pop(channel, None)
        shard = self._shards.get(self._shard_of.pop(channel, None))
        if shard is not None:
            shard.channels.discard(channel)
            shard.commands.append(("SUNSUBSCRIBE", channel))
            shard.unsubscribing[channel] = shard.unsubscribing.get(channel, 0) + 1

    def _cut(self, channels_cut) -> None:
        """Mark channels as cut off: unconfirmed, and their streams owe a re-read."""
        for channel in channels_cut:
            self._confirmed.discard(channel)
            self._gapped.add(channel)

    # -- the listeners --------------------------------------------------------------------

    def _start_keeper(self) -> None:
        if self._keeper is None and self.quota is not None:
            with self._lock:
                if self._keeper is None:
                    self._keeper = threading.Thread(target=self._keep_leases, name="qa-notify-leases", daemon=True)
                    self._keeper.start()

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

    def _run(self, shard: _Shard) -> None:
        """Keep ``shard``'s connection up until it carries no channel and is retired."""
        backoff = 0.1
        while not self._stopping and not shard.retired:
            try:
                self._listen(shard)
                backoff = 0.1
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                log.warning("hub lost Redis %s:%s (%s); reconnecting in %.1fs", *shard.address, exc, backoff)
                self._lost(shard)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:  # never let a listener die: streams depend on it
                log.exception("hub listener for %s:%s failed; restarting", *shard.address)
                self._lost(shard)
                time.sleep(backoff)

    def _lost(self, shard: _Shard) -> None:
        """The connection broke: cut its channels, find their owners again, re-subscribe them."""
        shard.connected.clear()
        self._report_connections()
        with self._lock:
            shard.commands.clear()
            shard.unsubscribing.clear()  # a new connection starts with no subscription at all
            self._cut(shard.channels)
            for channel in shard.channels:
                shard.commands.append(("SSUBSCRIBE", channel))
        if self._cluster:
            self._replan()

    def _replan(self) -> None:
        """Ask the cluster who owns which slot; move channels whose master changed."""
        try:
            refresh_topology(self.client)
        except redis.RedisError as exc:
            log.warning("hub could not refresh the cluster's slots yet: %s", exc)
            return
        with self._lock:
            for channel, address in list(self._shard_of.items()):
                try:
                    owner = owner_of(self.client, channel)
                except redis.RedisError:
                    continue  # slot not served yet (mid-failover): stays put, retried on the next break
                if owner == address:
                    continue
                old = self._shards.get(address)
                if old is not None:
                    old.channels.discard(channel)
                self._cut([channel])
                self._subscribe(channel, owner)
            for shard in self._shards.values():
                if not shard.channels and not shard.retired:
                    shard.retired = True  # its thread ends; a later subscribe makes a new one
            self._shards = {a: s for a, s in self._shards.items() if not s.retired}
        self._report_connections()

    def _listen(self, shard: _Shard) -> None:
        conn = subscriber_connection(self.client, shard.address)
        conn.connect()
        try:
            shard.connected.set()
            self._report_connections()
            while not self._stopping and not shard.retired:
                self._flush_commands(shard, conn)
                if not conn.can_read(timeout=self.POLL_SECONDS):
                    continue
                handled = 0
                while True:
                    try:
                        self._handle(shard, conn.read_response(disconnect_on_error=True))
                    except MovedError as exc:  # SSUBSCRIBE sent to a master that lost the slot
                        log.info("hub: slot %s moved to %s; re-subscribing there", exc.slot_id, exc.node_addr)
                        self._moved(shard, lambda channel, slot=exc.slot_id: self.client.keyslot(channel) == slot)
                    handled += 1
                    if handled % self.YIELD_EVERY == 0:
                        # Let the streams drain their buffers during a burst; otherwise a
                        # healthy client could overflow while this loop holds the CPU.
                        time.sleep(0)
                    if not conn.can_read(timeout=0):
                        break
        finally:
            shard.connected.clear()
            self._report_connections()
            conn.disconnect()

    def _report_connections(self) -> None:
        self._gauges.connections(self.is_connected(), self.connection_count())

    def _flush_commands(self, shard: _Shard, conn: redis.Connection) -> None:
        if not shard.commands:
            return
        with self._lock:
            batch = list(shard.commands)
            shard.commands.clear()
        conn.send_packed_command(conn.pack_commands(batch))

    def _moved(self, shard: _Shard, affected) -> None:
        """Some of ``shard``'s channels now belong to another master: cut them and replan."""
        with self._lock:
            self._cut([c for c in shard.channels if affected(c)])
        self._replan()

    def _handle(self, shard: _Shard, response) -> None:
        kind, channel = response[0], response[1]
        if kind == "smessage":
            self._deliver(channel, response[2])
        elif kind == "ssubscribe":
            self._confirm(shard, channel)
        elif kind == "sunsubscribe":
            with self._lock:
                own = shard.unsubscribing.get(channel, 0)
                if own:
                    shard.unsubscribing[channel] = own - 1
                    if own == 1:
                        del shard.unsubscribing[channel]
                    return
            # Not ours: the server dropped the channel because its slot moved away.
            if self._cluster:
                self._moved(shard, lambda c: c == channel)

    def _deliver(self, channel: str, payload: str) -> None:
        user_id = channels.user_id_from_channel(channel)
        subs = self._subs.get(user_id) if user_id is not None else None
        if not subs:
            return
        if payload.startswith("\n"):  # no event id: a control message (close the streams)
            self._handle_control(user_id, payload)
            return
        event: StreamEvent = parse_live_message(payload)
        for sub in list(subs):
            if not sub.push(event):
                self._cut_off(sub)

    def _confirm(self, shard: _Shard, channel: str) -> None:
        with self._lock:
            if self._shard_of.get(channel) != shard.address:
                return  # a late answer from a master the channel has since left
            self._confirmed.add(channel)
            waiter = self._waiters.pop(channel, None)
            owed = channel in self._gapped
            self._gapped.discard(channel)
            subs = list(self._subs.get(channels.user_id_from_channel(channel), ())) if owed else []
        for sub in subs:
            sub.push(GAP)
        if waiter is not None:
            waiter.set()

    def _handle_control(self, user_id: int, payload: str) -> None:
        try:
            _, action, body = payload.split("\n", 2)
            message = json.loads(body)
            if action == "close":
                self.close_user(user_id, str(message.get("reason", "closed")), message.get("session_id"))
        except (ValueError, TypeError, AttributeError):
            log.warning("ignored a malformed control message: %r", payload[:200])

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
