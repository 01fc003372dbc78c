"""How many streams a user may hold open, counted in Redis across all web processes.

Each open stream holds a lease: a member of the sorted set ``qa:u:<id>:conns`` scored with
its expiry time (Redis' own clock). The process renews its leases while the streams are
open; a crashed process's leases simply expire, so the count never leaks.
"""

from __future__ import annotations

import redis

from ..events import channels
from ..events.bus import eval_many

_CLAIM_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 1)
return 1
"""

_RENEW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', now + tonumber(ARGV[1]), ARGV[i + 1])
  redis.call('EXPIRE', KEYS[i], math.ceil(tonumber(ARGV[1])) + 1)
end
return #KEYS
"""
RENEW_CHUNK = 1000


class StreamQuota:
    """Leases on a per-user number of open streams."""

    def __init__(self, client: redis.Redis, limit: int, lease_seconds: float) -> None:
        self.client = client
        self.limit = limit
        self.lease_seconds = lease_seconds
        self._claim = client.register_script(_CLAIM_LUA)

    def claim(self, user_id: int, token: str) -> bool:
        """Take a lease for a new stream; False when the user already has ``limit`` open."""
        key = channels.user_connections(user_id)
        return bool(self._claim(keys=[key], args=[self.limit, self.lease_seconds, token]))

    def release(self, user_id: int, token: str) -> None:
        """Give a stream's lease back."""
        self.client.zrem(channels.user_connections(user_id), token)

    def renew(self, leases: list[tuple[int, str]]) -> None:
        """Extend the leases of streams that are still open: one Lua call per partition and chunk."""
        calls = []
        for group in channels.by_partition(leases):
            for start in range(0, len(group), RENEW_CHUNK):
                chunk = group[start : start + RENEW_CHUNK]
                keys = [channels.user_connections(user_id) for user_id, _ in chunk]
                calls.append((keys, [self.lease_seconds, *[token for _, token in chunk]]))
        eval_many(self.client, _RENEW_LUA, calls)
