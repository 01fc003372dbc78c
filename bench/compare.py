"""flask-sse 1.0 under the same load as qa_notify, in the same run, for the ratios.

flask-sse streams one Redis channel per user (``/stream?channel=user.<id>``) from
``gunicorn -k gevent``. Each of its streams holds its own Redis connection, so it stops at
Redis' ``maxclients`` (10,000, the embedded server's default too).

Measured for both: end-to-end latency from an HTTP POST (for qa_notify an answer going
through the database and a worker; for flask-sse a bare ``sse.publish``), the stream path
alone (an event written straight into Redis -> received), a broadcast to 10,000 streams,
and how many idle streams one process holds, with its RSS and Redis connections.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager

import httpx

from qa_notify.events import bus
from qa_notify.events.connections import make_client

from .clients import ClientFleet
from .scenarios import CONNECT_RATE, ThreadClients, _workdir, measure_latency
from .stack import Stack, only_child, port_of, redis_clients, rss_kb
from .users import create_users, session_cookies

CHANNEL = "/stream?channel=user.{uid}"


def _subscribed(r) -> int:
    return len(r.pubsub_channels("user.*"))


def _wait_subscribed(r, expected: int, timeout: float = 120) -> int:
    """flask-sse answers nothing until its first event: count its Redis subscriptions instead."""
    deadline = time.monotonic() + timeout
    last, stable_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = _subscribed(r)
        if now >= expected:
            return now
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since > 10:
            return now  # no progress for 10 s: that is all it takes
        time.sleep(0.5)
    return _subscribed(r)


def _flask_sse_fleet(url: str, uids: list[int]) -> ClientFleet:
    return ClientFleet(
        port_of(url),
        {uid: "" for uid in uids},
        seconds=300,
        path=CHANNEL,
        cookie_name=None,
        ready_on="connect",
        connect_rate=CONNECT_RATE,
    )


@contextmanager
def _flask_sse_streams(name: str, streams: int):
    """A flask-sse server with streams open for users 1..``streams``;
    yields (url, uids, fleet, redis client, streams subscribed)."""
    stack = Stack(_workdir(name))
    try:
        url, _ = stack.start_flask_sse()
        uids = list(range(1, streams + 1))
        fleet = _flask_sse_fleet(url, uids)
        r = stack.redis()
        yield url, uids, fleet, r, _wait_subscribed(r, streams)
        fleet.close()
    finally:
        stack.close()


def _message(marker: str) -> str:
    """What ``sse.publish({"excerpt": marker}, type="new_answers")`` puts on the channel."""
    return json.dumps({"data": {"excerpt": marker}, "type": "new_answers"})


def flask_sse_latency(streams: int, rate: float, seconds: float) -> dict:
    """1,000 streams; a driver POSTs to flask-sse's publish endpoint at ``rate``/s."""
    with _flask_sse_streams("flask-sse-latency", streams) as (url, uids, fleet, _, connected):
        clients = ThreadClients(base_url=url, timeout=10)
        errors = []

        def post(i: int) -> None:
            body = {"channel": f"user.{uids[i % len(uids)]}", "type": "new_answers", "data": {"excerpt": f"m{i}"}}
            try:
                clients.get().post("/publish", json=body).raise_for_status()
            except httpx.HTTPError:
                errors.append(i)

        total = int(rate * seconds)
        figures = measure_latency(fleet, post, total, rate)
    return {"streams": connected, "events": total, "post_errors": len(errors), **figures}


def stream_path_latency(streams: int, rate: float, seconds: float) -> dict:
    """The stream path alone, for both: events written straight into Redis -> received."""
    result = {}
    total = int(rate * seconds)
    stack = Stack(_workdir("stream-path"), SSE_HEARTBEAT_SECONDS="15")
    try:
        app = stack.app()
        ids = create_users(app, streams, prefix="s")
        url, _ = stack.start_web()
        fleet = ClientFleet(port_of(url), session_cookies(app, ids), seconds=300)
        fleet.wait_ready()
        r = make_client(stack.redis_url)

        def push(i: int) -> None:  # what a worker does for one recipient: one Lua call
            with app.app_context():
                bus.push_notifications(r, "new_answers", {"excerpt": f"m{i}"}, [(ids[i % len(ids)], 10**9 + i)])

        figures = measure_latency(fleet, push, total, rate, workers=0)
        fleet.close()
        result["qa_notify"] = {"streams": fleet.ready, "events": total, **figures}
    finally:
        stack.close()
    with _flask_sse_streams("stream-path-flask-sse", streams) as (_, uids, fleet, r, connected):

        def publish(i: int) -> None:
            r.publish(f"user.{uids[i % len(uids)]}", _message(f"m{i}"))

        figures = measure_latency(fleet, publish, total, rate, workers=0)
    result["flask_sse"] = {"streams": connected, "events": total, **figures}
    return result


def flask_sse_broadcast(streams: int) -> dict:
    """One announcement to every user: flask-sse must PUBLISH once per user channel."""
    with _flask_sse_streams("flask-sse-broadcast", streams) as (_, uids, fleet, r, connected):
        message = json.dumps({"data": {"message": "Maintenance at noon"}, "type": "broadcast"})
        sent_at = time.time()
        pipe = r.pipeline(transaction=False)
        for uid in uids:
            pipe.publish(f"user.{uid}", message)
        pipe.execute()
        deadline = time.monotonic() + 60
        while fleet.count_of("broadcast") < connected and time.monotonic() < deadline:
            time.sleep(0.05)
        arrivals = sorted(e["t"] - sent_at for e in fleet.events_of("broadcast"))
    return {
        "streams": streams,
        "connected": connected,
        "received": len(arrivals),
        "median_seconds": round(arrivals[len(arrivals) // 2], 3) if arrivals else None,
        "last_seconds": round(arrivals[-1], 3) if arrivals else None,
    }


def flask_sse_capacity(streams: int, hold_seconds: float = 20) -> dict:
    """How many idle flask-sse streams one gunicorn gevent worker holds; RSS; Redis connections."""
    stack = Stack(_workdir("flask-sse-capacity"))
    try:
        r = stack.redis()
        clients_before = redis_clients(r)
        url, master = stack.start_flask_sse()
        worker = only_child(master.pid)
        warm = _flask_sse_fleet(url, list(range(1, 11)))
        _wait_subscribed(r, 10)
        warm.close()
        time.sleep(3)
        rss_before = rss_kb(worker)
        fleet = _flask_sse_fleet(url, list(range(1, streams + 1)))
        _wait_subscribed(r, streams, timeout=300)
        time.sleep(hold_seconds)
        held = _subscribed(r)
        rss_after = rss_kb(worker)
        connections = redis_clients(r) - clients_before
        fleet.close()
        return {
            "streams_requested": streams,
            "open_after_hold": held,
            "connect_errors": fleet.errors,
            "error_sample": fleet.error_samples[:2],
            "rss_before_mb": round(rss_before / 1024, 1),
            "rss_after_mb": round(rss_after / 1024, 1),
            "rss_per_stream_kb": round((rss_after - rss_before) / max(held, 1), 1),
            "redis_connections_web_process": connections,
        }
    finally:
        stack.close()


def flask_sse(
    latency_streams: int = 1000, rate: float = 100, seconds: float = 20, broadcast_streams: int = 10_000,
    capacity_streams: int = 19_000,
) -> dict:  # fmt: skip
    """Everything measured for flask-sse (and the stream path of both), for ``report``."""
    return {
        "latency_http": flask_sse_latency(latency_streams, rate, seconds),
        "stream_path": stream_path_latency(latency_streams, rate, seconds),
        "broadcast": flask_sse_broadcast(broadcast_streams),
        "capacity": flask_sse_capacity(capacity_streams),
    }
