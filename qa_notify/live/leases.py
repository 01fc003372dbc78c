"""Stream leases: how many streams a user holds open across all web processes, and presence.

Each open stream holds a lease: a member of the sorted set ``qa:{tag}:u:<id>:conns``
(``channels.user_connections``) scored with its expiry time (Redis' own clock). A
``LeaseKeeper`` renews this process's leases while their streams are open; a crashed
process's leases simply expire, so the count never leaks.

The same Lua calls record presence: claiming, renewing or giving back a lease also sets
``qa:{tag}:u:<id>:seen`` (``channels.user_last_seen``) to Redis' time, so "when did this
user last have a stream open" is known to within a renewal interval. A user holding a
live lease is online. The away emails (``qa_notify.mail``) read both through ``presence``.
``LocalQuota`` counts in this process only: for one process without Redis, and for tests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis

from ..events import channels
from ..events.bus import eval_many

log = logging.getLogger(__name__)

# How long a user's "last seen" is kept: older than this, they are simply away.
SEEN_TTL_SECONDS = 30 * 24 * 3600

_CLAIM_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 1)
redis.call('SET', KEYS[2], string.format('%.3f', now), 'EX', ARGV[4])
return 1
"""

# KEYS: (leases, seen) pairs; ARGV: lease seconds, seen TTL, then one token per pair.
_RENEW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local seen = string.format('%.3f', now)
for i = 1, #KEYS / 2 do
  redis.call('ZADD', KEYS[2 * i - 1], 'XX', now + tonumber(ARGV[1]), ARGV[i + 2])
  redis.call('EXPIRE', KEYS[2 * i - 1], math.ceil(tonumber(ARGV[1])) + 1)
  redis.call('SET', KEYS[2 * i], seen, 'EX', ARGV[2])
end
return #KEYS / 2
"""

_RELEASE_LUA = """
local t = redis.call('TIME')
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], string.format('%.3f', tonumber(t[1]) + tonumber(t[2]) / 1e6), 'EX', ARGV[2])
return 1
"""

_PRESENCE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
return {redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf'), redis.call('GET', KEYS[2])}
"""
RENEW_CHUNK = 1000


@dataclass(frozen=True)
class Presence:
    """Whether a user has a stream open now, and when they last had one (Unix seconds, Redis' clock)."""

    online: bool
    last_seen: float | None


class Quota(Protocol):
    """Leases on a per-user number of open streams."""

    limit: int
    lease_seconds: float

    def claim(self, user_id: int, token: str) -> bool:
        """Take a lease for a new stream; False when the user already has ``limit`` open."""

    def release(self, user_id: int, token: str) -> None:
        """Give a stream's lease back."""

    def renew(self, leases: list[tuple[int, str]]) -> None:
        """Extend the leases of streams that are still open."""


class StreamQuota:
    """Leases on a per-user number of open streams, kept in Redis (across all web processes)."""

    def __init__(self, client: redis.Redis, limit: int, lease_seconds: float) -> None:
        self.client = client
        self.limit = limit
        self.lease_seconds = lease_seconds
        self._claim = client.register_script(_CLAIM_LUA)
        self._release = client.register_script(_RELEASE_LUA)

    def claim(self, user_id: int, token: str) -> bool:
        """Take a lease for a new stream; False when the user already has ``limit`` open."""
        keys = [channels.user_connections(user_id), channels.user_last_seen(user_id)]
        return bool(self._claim(keys=keys, args=[self.limit, self.lease_seconds, token, SEEN_TTL_SECONDS]))

    def release(self, user_id: int, token: str) -> None:
        """Give a stream's lease back (the user was there until now)."""
        keys = [channels.user_connections(user_id), channels.user_last_seen(user_id)]
        self._release(keys=keys, args=[token, SEEN_TTL_SECONDS])

    def renew(self, leases: list[tuple[int, str]]) -> None:
        """Extend the leases of streams that are still open: one Lua call per partition and chunk."""
        calls = []
        for group in channels.by_partition(leases):
            for start in range(0, len(group), RENEW_CHUNK):
                chunk = group[start : start + RENEW_CHUNK]
                keys = [
                    key
                    for user_id, _ in chunk
                    for key in (channels.user_connections(user_id), channels.user_last_seen(user_id))
                ]
                calls.append((keys, [self.lease_seconds, SEEN_TTL_SECONDS, *[token for _, token in chunk]]))
        eval_many(self.client, _RENEW_LUA, calls)


def presence(client: redis.Redis, user_id: int) -> Presence:
    """Return whether ``user_id`` holds a live stream lease now, and when they last had a stream open."""
    keys = [channels.user_connections(user_id), channels.user_last_seen(user_id)]
    live, seen = client.eval(_PRESENCE_LUA, 2, *keys)
    return Presence(online=int(live) > 0, last_seen=float(seen) if seen else None)


class LocalQuota:
    """Leases counted in this process only (no expiry needed: a process's leases die with it)."""

    def __init__(self, limit: int, lease_seconds: float = 60.0) -> None:
        self.limit = limit
        self.lease_seconds = lease_seconds
        self._held: dict[int, set[str]] = {}

    def claim(self, user_id: int, token: str) -> bool:
        """Take a lease for a new stream; False when the user already has ``limit`` open."""
        held = self._held.setdefault(user_id, set())
        if len(held) >= self.limit:
            return False
        held.add(token)
        return True

    def release(self, user_id: int, token: str) -> None:
        """Give a stream's lease back."""
        held = self._held.get(user_id, set())
        held.discard(token)
        if not held:
            self._held.pop(user_id, None)

    def renew(self, leases: list[tuple[int, str]]) -> None:
        """Nothing to do: local leases do not expire."""


class LeaseKeeper:
    """Claim and give back this process's stream leases; renew those of open streams in a thread."""

    TICK_SECONDS = 0.2

    def __init__(self, quota: Quota, open_leases: Callable[[], list[tuple[int, str]]]) -> None:
        self.quota = quota
        self.open_leases = open_leases
        self._release_later: deque[tuple[int, str]] = deque()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopping = False

    def claim(self, user_id: int, token: str) -> bool:
        """Take a lease for a new stream (and start renewing); False past the user's limit."""
        self._start()
        return self.quota.claim(user_id, token)

    def release(self, user_id: int, token: str, now: bool = True) -> None:
        """Give a lease back: at once, or (``now=False``, or Redis failing) by the keeper's thread."""
        if now:
            try:
                self.quota.release(user_id, token)
                return
            except redis.RedisError:
                pass  # the keeper retries; the lease expires on its own anyway
        self._release_later.append((user_id, token))

    def stop(self) -> None:
        """Stop renewing (the process is going; its leases expire on their own)."""
        self._stopping = True

    def _start(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._keep, name="qa-notify-leases", daemon=True)
                    self._thread.start()

    def _keep(self) -> None:
        """Renew the leases of open streams every third of a lease; give back those of closed ones."""
        interval = self.quota.lease_seconds / 3
        next_renewal = time.monotonic() + interval
        while not self._stopping:
            try:
                while self._release_later:
                    user_id, token = self._release_later.popleft()
                    self.quota.release(user_id, token)
                if time.monotonic() >= next_renewal:
                    next_renewal = time.monotonic() + interval
                    self.quota.renew(self.open_leases())
            except redis.RedisError:
                log.warning("could not renew stream leases; they expire on their own", exc_info=True)
            time.sleep(self.TICK_SECONDS)
