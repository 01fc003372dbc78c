"""``GET /notifications``: the logged-in user's events as Server-Sent Events.

On connect: subscribe to the user's channel (through the process's hub), then read what
they missed since ``Last-Event-ID`` from their Redis stream, then go live, dropping any live
event the backlog already covered. Nothing here queries the follow graph: it only relays
what the workers pushed.
"""

from __future__ import annotations

import json
import logging
import random
import socket

import redis
from flask import Response, current_app, request, session
from flask_login import current_user

from ..events import bus, sse
from ..events.types import BUILTIN_TYPES, RESYNC, SERVER_CLOSED, STREAM_TYPES
from ..extensions import db
from ..jsonapi import APIError, api_login_required
from ..logs import request_id as current_request_id
from ..metrics.instruments import STREAM_SENT
from ..webserver import SOCKET_KEY
from . import bp
from .hub import GAP, Hub, Subscription, TooManyStreams
from .quota import StreamQuota

log = logging.getLogger(__name__)


def get_hub() -> Hub:
    """Return this process's hub, creating it on first use."""
    hub = current_app.extensions.get("qa_hub")
    if hub is None:
        cfg = current_app.config
        quota = StreamQuota(bus.redis_client(), cfg["SSE_MAX_STREAMS_PER_USER"], cfg["SSE_LEASE_SECONDS"])
        hub = current_app.extensions["qa_hub"] = Hub(bus.redis_client(), cfg["SSE_BUFFER_SIZE"], quota)
    return hub


def requested_last_id() -> str | None:
    """Return the client's last event id (header, or ``?last_event_id=``) if well-formed."""
    raw = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    if not raw:
        return None
    try:
        bus.parse_event_id(raw.strip())
    except ValueError:
        return None  # garbage is treated as a first connection, never echoed
    return raw.strip()


@bp.get("/notifications")  # behind admission.StreamAdmission: refused cheaply in a storm
@api_login_required
def notifications_stream():
    """Stream the logged-in user's notifications; only theirs, whatever the query says."""
    user_id = current_user.id
    session_id = session.get("sid")
    # Give the database connection back now: the stream may stay open for hours, and
    # thousands of them must not hold a connection pool that has a few.
    db.session.close()
    hub = get_hub()
    r = bus.redis_client()
    try:
        sub = hub.attach(user_id, session_id)
    except TooManyStreams:
        raise APIError(429, "too many open notification streams for this user") from None
    except redis.RedisError:
        log.warning("stream for user %s refused: Redis unavailable", user_id, exc_info=True)
        raise APIError(503, "notifications are briefly unavailable; retrying") from None
    last_id = requested_last_id()
    # A first connection starts "now": every live event after the subscription counts.
    backlog = bus.Backlog([], False, None)
    if last_id is not None:
        try:
            backlog = bus.replay_since(r, user_id, last_id)
        except redis.RedisError:
            hub.detach(sub)
            log.warning("stream for user %s refused: Redis unavailable", user_id, exc_info=True)
            raise APIError(503, "notifications are briefly unavailable; retrying") from None
    cfg = current_app.config
    retry_ms = cfg["SSE_RETRY_MS"] + random.randint(0, cfg["SSE_RETRY_JITTER_MS"])
    sock = request.environ.get(SOCKET_KEY) or request.environ.get("gunicorn.socket")
    frame = _catch_all_frame if request.args.get("catch_all") in ("1", "true") else _frame
    body = _event_stream(
        hub, sub, r, backlog, retry_ms, cfg["SSE_HEARTBEAT_SECONDS"], sock, frame, current_request_id()
    )
    # direct_passthrough: the server iterates our generator itself (it already yields bytes),
    # without werkzeug's two wrapping iterators, which every idle stream would keep.
    response = Response(body, mimetype="text/event-stream", direct_passthrough=True)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


def _frame(event: bus.StreamEvent) -> bytes:
    return sse.format_event(event.data, event=event.type, id=event.id)


# The types a page names in addEventListener; with ``?catch_all=1`` every other type (another
# service's) comes as an unnamed message, {"type": ..., "data": {...}}, so one ``message``
# listener sees types the page has never heard of. Ids, order and replay are the same.
NAMED_TYPES = frozenset(BUILTIN_TYPES + STREAM_TYPES)


def _catch_all_frame(event: bus.StreamEvent) -> bytes:
    if event.type in NAMED_TYPES:
        return _frame(event)
    envelope = '{"type":' + json.dumps(event.type) + ',"data":' + event.data + "}"
    return sse.format_event(envelope, id=event.id)


def _resync_frame(last_id: str | None) -> bytes:
    return sse.format_event(json.dumps({"reason": "history_gap"}), event=RESYNC, id=last_id)


def _event_stream(
    hub: Hub,
    sub: Subscription,
    r: redis.Redis,
    backlog: bus.Backlog,
    retry_ms: int,
    heartbeat: float,
    sock=None,
    frame=_frame,
    request_id: str | None = None,
):
    """Yield the SSE body: retry hint, backlog (or resync), then live events and heartbeats.

    The body runs after the request has ended, in the connection's greenlet: its log lines
    name the stream's ``request_id`` themselves.
    """
    import gevent

    sub.owner = gevent.getcurrent()
    hangup = watch_for_hangup(sock, sub)
    try:
        yield sse.format_retry(retry_ms)
        if backlog.gap:
            yield _resync_frame(backlog.last_id)
        for event in backlog.events:
            yield frame(event)
        last = bus.parse_event_id(backlog.last_id) if backlog.last_id else (0, 0)
        last_id = backlog.last_id
        while True:
            # This frame lives as long as the stream: let it hold nothing already sent (a
            # replayed backlog, the last batch of events) while it idles.
            backlog = caught_up = items = batch = item = event = None
            items = sub.wait(heartbeat)
            if sub.closed:
                if sub.close_reason == "shutdown":
                    yield _reconnect_hint(retry_ms)
                elif sub.close_reason not in SILENT_CLOSES:
                    yield sse.format_event(json.dumps({"reason": sub.close_reason}), event=SERVER_CLOSED)
                return
            if not items:
                yield sse.format_comment("heartbeat")
                continue
            for item in items:
                if item is GAP:
                    caught_up = bus.replay_since(r, sub.user_id, last_id)
                    if caught_up.gap:
                        yield _resync_frame(caught_up.last_id)
                    batch = caught_up.events
                    if caught_up.gap and caught_up.last_id:
                        last, last_id = bus.parse_event_id(caught_up.last_id), caught_up.last_id
                else:
                    batch = [item]
                for event in batch:
                    key = event.sort_key
                    if key <= last:
                        continue  # already sent from the backlog
                    yield frame(event)
                    last, last_id = key, event.id
                    if item is not GAP:  # live, not a catch-up: time from its write to Redis until sent
                        STREAM_SENT.observe_since_ms(key[0])
    except redis.RedisError:
        log.info(
            "stream of user %s ended: Redis unavailable during catch-up",
            sub.user_id,
            extra={"request_id": request_id},
        )
    finally:
        if hangup is not None:
            hangup.stop()
        hub.detach(sub)


# Closes after which no event is sent: nobody reads (overflow, hang-up) or the process is going
# (that one sends only a reconnect hint, see ``_reconnect_hint``).
SILENT_CLOSES = ("overflow", "shutdown", "client_gone")


def _reconnect_hint(retry_ms: int) -> bytes:
    """The last bytes of a stream whose process is stopping: reconnect in a quarter of its delay.

    A shutdown is not a sign-out (no ``server_closed``): the browser reconnects with its
    ``Last-Event-ID`` and another process replays what it missed. A quarter of the stream's
    own jittered delay (0.5 to 1.25 s by default) brings it back soon but not in step.
    """
    return sse.format_comment("server restarting; reconnect") + sse.format_retry(retry_ms // 4)


def watch_for_hangup(sock, sub: Subscription):
    """Close ``sub`` the moment its client hangs up; return the watcher (stop it when done).

    An SSE client sends nothing after its request, so the socket turning readable means
    it closed (or reset) the connection. A libev watcher costs a few hundred bytes and no
    greenlet, so every idle stream can have one; without it a closed stream kept its slot
    in the user's stream quota until a heartbeat write failed, up to 15 s later.
    """
    if sock is None:
        return None  # not served by our gevent server (e.g. a test client): heartbeats notice
    try:
        import gevent

        watcher = gevent.get_hub().loop.io(sock.fileno(), 1)
    except (OSError, ValueError, AttributeError):
        return None
    raw = getattr(sock, "_sock", sock)  # the real, non-blocking socket: no greenlet switch in the hub
    # A module function and the watcher's own arguments rather than a closure: ~0.2 KB less
    # per stream (a function object and three cells).
    watcher.start(_on_readable, watcher, raw, sub)
    return watcher


def _on_readable(watcher, raw, sub: Subscription) -> None:
    """The socket of ``sub``'s stream turned readable: close ``sub`` if the client hung up."""
    try:
        gone = not raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return  # spurious wake-up
    except OSError:
        gone = True
    watcher.stop()  # data or hang-up: either way there is nothing more to watch for
    if gone:
        sub.close("client_gone")


def close_all_streams(app) -> None:
    """End every open stream of this process (on shutdown): browsers reconnect elsewhere."""
    app.extensions["qa_draining"] = True  # /readyz answers 503 from now on
    hub = app.extensions.get("qa_hub")
    if hub is not None:
        hub.shutdown()
