"""How many streams a user may hold open, counted in Redis across all web processes; presence.

Each open stream holds a lease: a member of the sorted set ``qa:u:<id>:conns`` scored with
its expiry time (Redis' own clock). The process renews its leases while the streams are
open; a crashed process's leases simply expire, so the count never leaks.

The same Lua calls record presence: claiming, renewing or giving back a lease also sets
``qa:u:<id>:seen`` to Redis' time, so "when did this user last have a stream open" is
known to within a renewal interval. A user holding a live lease is online. The away
emails (``qa_notify.mail``) read both through ``presence``.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from ..events import channels
from ..events.bus import eval_many

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


class StreamQuota:
    """Leases on a per-user number of open streams."""

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
