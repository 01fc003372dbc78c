"""The Redis brokers: which user channel rides on which subscriber connection, and confirmed re-subscription.

flask-sse opens a pub/sub connection per client and falls over at Redis' ``maxclients``.
Here one connection per Redis master (a ``shard.Shard``) subscribes (sharded pub/sub,
``SSUBSCRIBE``) to the channel of each user with a stream open in this process, whatever
the number of streams, and to the one broadcast channel (events for everyone, written once).

When a connection breaks, or a cluster moves a slot (failover, resharding), the affected
channels are *cut*: subscribed again on whichever master now owns them, and once a channel
is confirmed again the handler's ``resume`` makes its streams re-read the user's Redis
stream from their last id, so nothing published meanwhile is lost and nothing is sent twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

import redis

from ..events import channels
from ..events.connections import owner_of, refresh_topology
from ..metrics import instruments
from .broker import BrokerHandler, dispatch, dispatch_broadcast
from .replay import RedisHistory
from .shard import Address, Shard

log = logging.getLogger(__name__)


class RedisBroker(RedisHistory):
    """Users' live channels on one Redis server, and their history in its streams."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.handler: BrokerHandler | None = None
        self.lock = threading.Lock()
        self.stopping = False
        self._confirmed: set[str] = set()
        self._waiters: dict[str, threading.Event] = {}
        # Channels that were cut off (broken connection, moved slot): their streams are
        # resumed once the channel is confirmed again, not before, so the re-read misses nothing.
        self._gapped: set[str] = set()
        self._shards: dict[Address, Shard] = {}
        self._shard_of: dict[str, Address] = {}
        self._gauges = instruments.stream_gauges()
        self.broadcasts = channels.broadcast_channel()

    # -- the Broker interface ---------------------------------------------------------------

    def bind(self, handler: BrokerHandler) -> None:
        """Hand everything that arrives to ``handler`` from now on."""
        self.handler = handler

    def subscribe(self, user_id: int) -> None:
        """Start carrying ``user_id``'s channel on the connection to the server that owns it."""
        self._subscribe(channels.user_channel(user_id))

    def wait_confirmed(self, user_id: int, timeout: float) -> bool:
        """Block until ``user_id``'s channel is confirmed; False after ``timeout`` seconds."""
        return self._wait_confirmed(channels.user_channel(user_id), timeout)

    def subscribe_broadcasts(self) -> None:
        """Start carrying the broadcast channel, for as long as the process runs."""
        self._subscribe(self.broadcasts)

    def wait_broadcasts_confirmed(self, timeout: float) -> bool:
        """Block until the broadcast channel is confirmed; False after ``timeout`` seconds."""
        return self._wait_confirmed(self.broadcasts, timeout)

    def _subscribe(self, channel: str) -> None:
        with self.lock:
            self._waiters.setdefault(channel, threading.Event())
            self._place(channel, owner_of(self.client, channel))

    def _wait_confirmed(self, channel: str, timeout: float) -> bool:
        with self.lock:
            if channel in self._confirmed:
                return True
            waiter = self._waiters.setdefault(channel, threading.Event())
        return waiter.wait(timeout)

    def unsubscribe(self, user_id: int) -> None:
        """Stop carrying ``user_id``'s channel."""
        channel = channels.user_channel(user_id)
        with self.lock:
            self._confirmed.discard(channel)
            self._gapped.discard(channel)
            self._waiters.pop(channel, None)
            address = self._shard_of.pop(channel, None)
            shard = self._shards.get(address) if address is not None else None
            if shard is not None:
                shard.drop(channel)

    def is_connected(self) -> bool:
        """True when every subscriber connection this process needs is up."""
        shards = [s for s in self._shards.values() if not s.retired]
        return bool(shards) and all(s.connected.is_set() for s in shards)

    def connection_count(self) -> int:
        """Return the number of subscriber connections (one per Redis master in use)."""
        return sum(1 for s in self._shards.values() if not s.retired and s.connected.is_set())

    def stop(self) -> None:
        """Let every connection go (at its next poll)."""
        self.stopping = True

    # -- what the shards call ---------------------------------------------------------------

    def report_connections(self) -> None:
        """Publish whether the connections are up, and how many (``/metrics``)."""
        self._gauges.connections(self.is_connected(), self.connection_count())

    def handle(self, shard: Shard, response) -> None:
        """Act on one reply read from ``shard``'s connection."""
        kind, channel = response[0], response[1]
        if kind == "smessage":
            user_id = channels.user_id_from_channel(channel)
            if user_id is not None and self.handler is not None:
                dispatch(self.handler, user_id, response[2])
            elif channel == self.broadcasts and self.handler is not None:
                dispatch_broadcast(self.handler, response[2])
        elif kind == "ssubscribe":
            self._confirm(shard, channel)
        elif kind == "sunsubscribe" and not shard.answers_own_unsubscribe(channel):
            self.dropped(shard, channel)  # the server dropped the channel: its slot moved away

    def lost(self, shard: Shard) -> None:
        """``shard``'s connection broke: cut its channels and queue them to subscribe again."""
        shard.connected.clear()
        self.report_connections()
        with self.lock:
            shard.commands.clear()
            shard.unsubscribing.clear()  # a new connection starts with no subscription at all
            self._cut(shard.channels)
            for channel in shard.channels:
                shard.commands.append(("SSUBSCRIBE", channel))

    def slot_moved(self, shard: Shard, slot: int, owner: Address) -> None:
        """A server refused a subscription because ``slot`` moved to ``owner`` (clusters only)."""

    def dropped(self, shard: Shard, channel: str) -> None:
        """The server unsubscribed ``channel`` on its own (clusters only: a slot moved away)."""

    # -- the plan (called with the lock held) -----------------------------------------------

    def _place(self, channel: str, address: Address) -> None:
        """Carry ``channel`` on the connection to ``address`` (made on first use)."""
        shard = self._shards.get(address)
        if shard is None or shard.retired:
            shard = self._shards[address] = Shard(self, address)
            shard.start()
        shard.channels.add(channel)
        self._shard_of[channel] = address
        shard.commands.append(("SSUBSCRIBE", channel))

    def _cut(self, channels_cut: Iterable[str]) -> None:
        """Mark channels as cut off: unconfirmed, and their streams owe a re-read."""
        for channel in channels_cut:
            self._confirmed.discard(channel)
            self._gapped.add(channel)

    def _confirm(self, shard: Shard, channel: str) -> None:
        """``channel`` is subscribed (again): resume its streams if it was cut, wake who waits for it."""
        with self.lock:
            if self._shard_of.get(channel) != shard.address:
                return  # a late answer from a master the channel has since left
            self._confirmed.add(channel)
            waiter = self._waiters.pop(channel, None)
            owed = channel in self._gapped
            self._gapped.discard(channel)
        user_id = channels.user_id_from_channel(channel)
        if owed and user_id is not None and self.handler is not None:
            self.handler.resume(user_id)
        elif owed and channel == self.broadcasts and self.handler is not None:
            self.handler.resume_broadcasts()
        if waiter is not None:
            waiter.set()


class ClusterBroker(RedisBroker):
    """Users' live channels on a Redis Cluster: one connection per master, following slot moves."""

    def lost(self, shard: Shard) -> None:
        """The connection broke: cut its channels, find their owners again, re-subscribe them."""
        super().lost(shard)
        self._replan()

    def slot_moved(self, shard: Shard, slot: int, owner: Address) -> None:
        """Cut ``shard``'s channels in ``slot`` and subscribe them on ``owner``, which the refusal named."""
        with self.lock:
            moved = [c for c in shard.channels if self.client.keyslot(c) == slot]  # type: ignore[attr-defined]
            self._cut(moved)
            for channel in moved:
                shard.channels.discard(channel)
                self._place(channel, owner)

    def dropped(self, shard: Shard, channel: str) -> None:
        """The server dropped ``channel``: its slot moved away; follow it."""
        with self.lock:
            cut = [channel] if channel in shard.channels else []
            self._cut(cut)
        self._replan(stranded=cut)

    def _replan(self, stranded: Iterable[str] = ()) -> None:
        """Ask the cluster who owns which slot; move channels whose master changed.

        ``stranded`` channels were cut off by their server: where the answer still names that
        server (the cluster's view of a move can lag behind the move), they are subscribed
        there again, so its refusal (``MOVED``, naming the new owner) moves them on.
        """
        try:
            refresh_topology(self.client)
        except redis.RedisError as exc:
            log.warning("hub could not refresh the cluster's slots yet: %s", exc)
            self._resubscribe(stranded)
            return
        with self.lock:
            for channel, address in list(self._shard_of.items()):
                try:
                    owner = owner_of(self.client, channel)
                except redis.RedisError:
                    continue  # slot not served yet (mid-failover): stays put, retried on the next break
                if owner != address:
                    old = self._shards.get(address)
                    if old is not None:
                        old.channels.discard(channel)
                    self._cut([channel])
                    self._place(channel, owner)
            for shard in self._shards.values():
                if not shard.channels and not shard.retired:
                    shard.retired = True  # its thread ends; a later subscribe makes a new one
            self._shards = {a: s for a, s in self._shards.items() if not s.retired}
        self._resubscribe(stranded)
        self.report_connections()

    def _resubscribe(self, stranded: Iterable[str]) -> None:
        """Subscribe again, where they are placed, the ``stranded`` channels still unconfirmed and unmoved."""
        with self.lock:
            for channel in stranded:
                address = self._shard_of.get(channel)
                shard = self._shards.get(address) if address is not None else None
                if shard is not None and channel in shard.channels and channel in self._gapped:
                    shard.commands.append(("SSUBSCRIBE", channel))
