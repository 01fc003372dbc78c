"""One subscriber connection to one Redis server: keep it up, send what is queued, hand on what arrives.

The broker that owns the shard (``subscriber.RedisBroker``) decides which channels it
carries; the shard only talks to its server: reconnecting with a backoff after a break,
sending queued ``SSUBSCRIBE`` / ``SUNSUBSCRIBE`` commands, and handing each reply back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

import redis
from redis.exceptions import MovedError

from ..events.connections import subscriber_connection

if TYPE_CHECKING:
    from .subscriber import RedisBroker

log = logging.getLogger(__name__)
Address = tuple[str, int]


class Shard:
    """One subscriber connection to one Redis server, and the channels it carries."""

    __slots__ = ("address", "broker", "commands", "channels", "unsubscribing", "connected", "retired")

    POLL_SECONDS = 0.05
    YIELD_EVERY = 8

    def __init__(self, broker: RedisBroker, address: Address) -> None:
        self.broker = broker
        self.address = address
        self.commands: deque[tuple[str, str]] = deque()
        self.channels: set[str] = set()
        # Our own SUNSUBSCRIBEs not yet answered, per channel: their answers are not moves.
        self.unsubscribing: dict[str, int] = {}
        self.connected = threading.Event()
        self.retired = False

    def drop(self, channel: str) -> None:
        """Stop carrying ``channel`` (called with the broker's lock held)."""
        self.channels.discard(channel)
        self.commands.append(("SUNSUBSCRIBE", channel))
        self.unsubscribing[channel] = self.unsubscribing.get(channel, 0) + 1

    def answers_own_unsubscribe(self, channel: str) -> bool:
        """True when an SUNSUBSCRIBE reply answers one of ours (and count it off)."""
        with self.broker.lock:
            own = self.unsubscribing.get(channel, 0)
            if not own:
                return False
            if own == 1:
                del self.unsubscribing[channel]
            else:
                self.unsubscribing[channel] = own - 1
            return True

    def start(self) -> None:
        """Connect and listen in a thread of its own (a greenlet under gevent)."""
        name = f"qa-notify-hub-{self.address[1]}"
        threading.Thread(target=self.run, name=name, daemon=True).start()

    def run(self) -> None:
        """Keep the connection up until the shard carries no channel and is retired."""
        backoff = 0.1
        while not self.broker.stopping and not self.retired:
            try:
                self._listen()
                backoff = 0.1
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                log.warning("hub lost Redis %s:%s (%s); reconnecting in %.1fs", *self.address, exc, backoff)
                self.broker.lost(self)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:  # never let a listener die: streams depend on it
                log.exception("hub listener for %s:%s failed; restarting", *self.address)
                self.broker.lost(self)
                time.sleep(backoff)

    def _listen(self) -> None:
        conn = subscriber_connection(self.broker.client, self.address)
        conn.connect()
        try:
            self.connected.set()
            self.broker.report_connections()
            while not self.broker.stopping and not self.retired:
                self._flush_commands(conn)
                if conn.can_read(timeout=self.POLL_SECONDS):
                    self._read_available(conn)
        finally:
            self.connected.clear()
            self.broker.report_connections()
            conn.disconnect()

    def _read_available(self, conn: redis.Connection) -> None:
        """Hand on every reply that has arrived, yielding now and then during a burst."""
        handled = 0
        while True:
            try:
                self.broker.handle(self, conn.read_response(disconnect_on_error=True))
            except MovedError as exc:  # SSUBSCRIBE sent to a master that lost the slot
                log.info("hub: slot %s moved to %s; re-subscribing there", exc.slot_id, exc.node_addr)
                self.broker.slot_moved(self, exc.slot_id, (exc.host, exc.port))
            handled += 1
            if handled % self.YIELD_EVERY == 0:
                # Let the streams drain their buffers during a burst; otherwise a healthy
                # client could overflow while this loop holds the CPU.
                time.sleep(0)
            if not conn.can_read(timeout=0):
                break

    def _flush_commands(self, conn: redis.Connection) -> None:
        if not self.commands:
            return
        with self.broker.lock:
            batch = list(self.commands)
            self.commands.clear()
        conn.send_packed_command(conn.pack_commands(batch))
