"""Redis side of delivery (the write side): push events into per-user streams and channels.

Each user has a capped Redis stream (replay after a reconnect) and a pub/sub channel (live
push). A Lua script appends to the stream and publishes in one atomic step, so the order
on the channel is the order in the stream and a stream entry's id is part of the SSE event
id: it only grows, per user. An event for everyone is written once, to the broadcast
stream and channel, with who it is for (a role, its author) for the live side to filter.
Key and channel names come from ``channels``; reading a stream back is the live side's
(``qa_notify.live.replay``).
"""

from __future__ import annotations

import json
import logging
import time

import redis
from flask import current_app
from redis.exceptions import AskError, ClusterDownError, MovedError, NoScriptError, RedisClusterException, TryAgainError

from . import channels
from .connections import is_cluster_client, make_client, redacted
from .types import Event, event_type_of

log = logging.getLogger(__name__)

# KEYS: the event's marker in this partition (a set of the notification ids pushed), then
# each recipient's stream. ARGV: type, payload JSON object, maxlen, stream ttl, marker ttl,
# then per recipient (channel, nid). A recipient whose nid is in the marker was pushed
# before (a retried task) and is skipped. The marker is written before the streams, as one
# SET per recipient was: a script stopped half-way by an error loses, never doubles.
_DELIVER_LUA = """
local etype, data, maxlen, ttl, mttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local head = string.sub(data, 1, -2)
local nids = {}
for i = 1, #KEYS - 1 do nids[i] = ARGV[5 + 2 * i] end
local seen = redis.call('SMISMEMBER', KEYS[1], unpack(nids))
local fresh = {}
for i = 1, #nids do
  if seen[i] == 0 then fresh[#fresh + 1] = i end
end
if #fresh == 0 then return 0 end
local marked = {}
for j = 1, #fresh do marked[j] = nids[fresh[j]] end
redis.call('SADD', KEYS[1], unpack(marked))
redis.call('EXPIRE', KEYS[1], mttl)
for _, i in ipairs(fresh) do
  -- The server's field goes last: with a duplicate key, JSON.parse keeps the last one.
  local body = head .. ',"notification_id":' .. nids[i] .. '}'
  local id = redis.call('XADD', KEYS[1 + i], 'MAXLEN', '~', maxlen, '*', 't', etype, 'd', body)
  redis.call('EXPIRE', KEYS[1 + i], ttl)
  redis.call('SPUBLISH', ARGV[4 + 2 * i], id .. '\\n' .. etype .. '\\n' .. body)
end
return #fresh
"""

# A live-only event for one user (no inbox row, no marker): KEYS[1] stream; ARGV type, data,
# maxlen, ttl, channel.
_PUSH_LUA = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 't', ARGV[1], 'd', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('SPUBLISH', ARGV[5], id .. '\\n' .. ARGV[1] .. '\\n' .. ARGV[2])
return id
"""

# An event for everyone, once. KEYS: broadcast stream, marker. ARGV: type, payload JSON,
# role ('' for all), author id ('' for none), outbox id, maxlen, ttl, marker ttl, channel.
# The marker holds the entry's id: a retried fan-out publishes nothing twice and gets the id.
# The channel message is "id\ntype\nrole\nauthor\ndata" (live.broker.dispatch_broadcast).
_BROADCAST_LUA = """
local done = redis.call('GET', KEYS[2])
if done then return done end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[6], '*',
  't', ARGV[1], 'd', ARGV[2], 'r', ARGV[3], 'a', ARGV[4], 'o', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('SET', KEYS[2], id, 'EX', ARGV[8])
redis.call('SPUBLISH', ARGV[9], id .. '\\n' .. ARGV[1] .. '\\n' .. ARGV[3] .. '\\n' .. ARGV[4] .. '\\n' .. ARGV[2])
return id
"""

MARKER_TTL_SECONDS = 3 * 24 * 3600
# Recipients per Lua call: keeps any one script short so Redis stays responsive.
SCRIPT_CHUNK = 500


def redis_client() -> redis.Redis:
    """Return the app's shared Redis client (a small pool per process).

    A cluster that could not be reached when the process started (down, still forming,
    a wrong address) is tried again here, at most every few seconds; meanwhile this
    raises ``redis.ConnectionError``, which the web answers with a 503 and the workers
    retry with backoff.
    """
    client = current_app.extensions.get("qa_redis")
    if client is None:
        if not current_app.config["REDIS_URL"]:
            raise redis.ConnectionError("no Redis configured: set REDIS_URL or start `manage.py run`")
        client = connect_redis(current_app)
        if client is None:
            raise redis.ConnectionError("Redis is not reachable yet; retrying")
    return client


RECONNECT_SECONDS = 3.0


def connect_redis(app) -> redis.Redis | None:
    """Create the app's Redis client; None (one clear log line) while the servers cannot be reached."""
    now = time.monotonic()
    if now < app.extensions.get("qa_redis_retry_at", 0):
        return None
    try:
        client = make_client(app.config["REDIS_URL"])
    except (redis.RedisError, RedisClusterException) as exc:
        app.extensions["qa_redis_retry_at"] = now + RECONNECT_SECONDS
        log.error("Redis at %s is not reachable (%s); retrying every %.0fs", redacted(app.config["REDIS_URL"]), exc,
                  RECONNECT_SECONDS)  # fmt: skip
        return None
    app.extensions["qa_redis"] = client
    return client


def redis_bytes_client() -> redis.Redis:
    """Return a client that hands back bytes, undecoded: for data other programs wrote.

    Made on first use (only the worker that reads the ingest stream needs one).
    """
    client = current_app.extensions.get("qa_redis_bytes")
    if client is None:
        redis_client()  # the same "no Redis configured" error when there is none
        client = make_client(current_app.config["REDIS_URL"], max_connections=1, decode=False)
        current_app.extensions["qa_redis_bytes"] = client
    return client


def redis_client_or_none() -> redis.Redis | None:
    """Return the app's Redis client, or None when the app runs without Redis."""
    return current_app.extensions.get("qa_redis")


def push_notifications(
    r: redis.Redis, outbox_id: int, event_type: str, payload: dict, recipients: list[tuple[int, int]]
) -> int:
    """Push one event (outbox row ``outbox_id``) to many users: ``recipients`` is
    (user_id, notification_id) pairs.

    Return how many were pushed now (those already pushed by an earlier try are skipped).
    """
    return push_events(r, [(outbox_id, event_type, payload, recipients)])[0]


def push_events(r: redis.Redis, events: list[tuple[int, str, dict, list[tuple[int, int]]]]) -> list[int]:
    """Push several events, each ``(outbox id, type, payload, recipients)``, in one pipeline
    per Redis master.

    Each user gets their events in the order given. Return how many of each event's
    recipients were pushed now (those already pushed by an earlier try are skipped).
    """
    cfg = current_app.config
    calls, owners = [], []
    for index, (outbox_id, event_type, payload, recipients) in enumerate(events):
        data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        common = [event_type, data, cfg["USER_STREAM_MAXLEN"], cfg["USER_STREAM_TTL_SECONDS"], MARKER_TTL_SECONDS]
        for group in channels.by_partition(recipients):
            marker = channels.delivered_marker(group[0][0], outbox_id)
            for start in range(0, len(group), SCRIPT_CHUNK):
                keys: list[str] = [marker]
                args: list = list(common)
                for user_id, notification_id in group[start : start + SCRIPT_CHUNK]:
                    stream, channel = channels.delivery_keys(user_id)
                    keys.append(stream)
                    args += [channel, int(notification_id)]
                calls.append((keys, args))
                owners.append(index)
    pushed = [0] * len(events)
    if calls:
        results = eval_many(r, _DELIVER_LUA, calls, cfg["REDIS_WAIT_REPLICAS"], cfg["REDIS_WAIT_TIMEOUT_MS"])
        for index, count in zip(owners, results, strict=True):
            pushed[index] += int(count)
    return pushed


def eval_many(
    r: redis.Redis, script: str, calls: list[tuple[list, list]], wait_replicas: int = 0, wait_ms: int = 100
) -> list:
    """Run ``script`` once per (keys, args) call, pipelined; return the results in order.

    One round trip on a single server; on a cluster, the calls are grouped by the master
    that owns their slot (each call's keys share one) and each master gets one pipeline.
    A call a server refused without running it (it lacks the script: new, restarted, a
    promoted replica; or the slot just moved) is sent again on its own through the
    client, which loads the script and follows the cluster's redirections. Refused calls
    did not run, so nothing runs twice. With ``wait_replicas``, each server's pipeline ends
    with ``WAIT``: the writes are on that many replicas before this returns (else logged).
    """
    sha = r.register_script(script).sha
    results: list = [None] * len(calls)
    for server, indexes in _by_server(r, calls):
        with server.pipeline(transaction=False) as pipe:
            for i in indexes:
                keys, args = calls[i]
                pipe.evalsha(sha, len(keys), *keys, *args)
            if wait_replicas:
                pipe.execute_command("WAIT", wait_replicas, wait_ms)
            answers = pipe.execute(raise_on_error=False)
            for i, result in zip(indexes, answers, strict=False):
                results[i] = result
            if wait_replicas:
                _check_replicas(answers[-1], wait_replicas)
    for i, result in enumerate(results):
        if isinstance(result, _REFUSED_UNRUN):
            results[i] = _eval_one(r, script, sha, *calls[i])
            if wait_replicas:
                server = _server_of(r, calls[i][0]) if is_cluster_client(r) else r
                _check_replicas(server.execute_command("WAIT", wait_replicas, wait_ms), wait_replicas)
        elif isinstance(result, Exception):
            raise result
    return results


def _check_replicas(acked, wanted: int) -> None:
    """Log when fewer replicas than asked hold the writes (they stay written; a failover now could lose them)."""
    if isinstance(acked, Exception) or int(acked) < wanted:
        log.warning("only %s of %s replicas acknowledged delivered events in time", acked, wanted)


def _server_of(r: redis.Redis, keys: list) -> redis.Redis:
    return r.nodes_manager.get_node_from_slot(r.keyslot(keys[0])).redis_connection


# Errors with which a server refuses a script call without running any of it.
_REFUSED_UNRUN = (NoScriptError, MovedError, AskError, TryAgainError, ClusterDownError)


def _by_server(r: redis.Redis, calls: list[tuple[list, list]]) -> list[tuple[redis.Redis, list[int]]]:
    """Group call indexes by the server (a cluster's master) that owns each call's keys."""
    if not is_cluster_client(r):
        return [(r, list(range(len(calls))))]
    groups: dict[str, tuple[redis.Redis, list[int]]] = {}
    for i, (keys, _) in enumerate(calls):
        node = r.nodes_manager.get_node_from_slot(r.keyslot(keys[0]))
        groups.setdefault(node.name, (node.redis_connection, []))[1].append(i)
    return list(groups.values())


def _eval_one(r: redis.Redis, script: str, sha: str, keys: list, args: list):
    try:
        return r.evalsha(sha, len(keys), *keys, *args)
    except NoScriptError:
        r.script_load(script)  # on a cluster, every master
        return r.evalsha(sha, len(keys), *keys, *args)


def publish_broadcast(
    r: redis.Redis, outbox_id: int, event_type: str, payload: dict, role: str | None, author_id: int | None
) -> str:
    """Write an event for everyone (or one ``role``) once: one stream entry, one publish; return its id.

    Every web process hears it on the one broadcast channel and hands it to its streams
    whose user it is for (not ``author_id``, not who muted the type). Safe to call again for
    the same ``outbox_id``: the first call's entry id comes back and nothing is published twice.
    """
    cfg = current_app.config
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    keys = [channels.broadcast_stream(), channels.broadcast_marker(outbox_id)]
    args = [
        event_type,
        data,
        role or "",
        "" if author_id is None else int(author_id),
        int(outbox_id),
        cfg["USER_STREAM_MAXLEN"],
        cfg["USER_STREAM_TTL_SECONDS"],
        MARKER_TTL_SECONDS,
        channels.broadcast_channel(),
    ]
    [entry_id] = eval_many(r, _BROADCAST_LUA, [(keys, args)], cfg["REDIS_WAIT_REPLICAS"], cfg["REDIS_WAIT_TIMEOUT_MS"])
    return entry_id


def push_live(r: redis.Redis, user_id: int, event: Event) -> str:
    """Push a live-only event (such as ``read``) to one user; return its stream id."""
    cfg = current_app.config
    data = json.dumps(event.payload(), separators=(",", ":"), ensure_ascii=False)
    script = r.register_script(_PUSH_LUA)
    return script(
        keys=[channels.user_stream(user_id)],
        args=[
            event_type_of(event),
            data,
            cfg["USER_STREAM_MAXLEN"],
            cfg["USER_STREAM_TTL_SECONDS"],
            channels.user_channel(user_id),
        ],
    )


def close_user_streams(r: redis.Redis, user_id: int, reason: str, session_id: str | None = None) -> None:
    """Ask every web process to close ``user_id``'s open streams (of one session, if given)."""
    # On the user's own channel, so only the processes serving that user hear it; with no
    # event id in front, the live side knows it for a control message.
    message = "\nclose\n" + json.dumps({"reason": reason, "session_id": session_id})
    try:
        r.spublish(channels.user_channel(user_id), message)
    except redis.RedisError:
        log.warning("could not ask web processes to close streams of user %s", user_id, exc_info=True)


def update_user_streams(r: redis.Redis, user_id: int, muted: list[str]) -> None:
    """Tell every web process the event types ``user_id`` muted now, so their open streams
    leave out broadcasts of those types (a control message on the user's own channel)."""
    try:
        r.spublish(channels.user_channel(user_id), "\nmuted\n" + json.dumps(sorted(muted)))
    except redis.RedisError:
        log.warning("could not tell web processes of user %s's muted types", user_id, exc_info=True)
