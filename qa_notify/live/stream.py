"""``GET /notifications``: the logged-in user's events as Server-Sent Events.

On connect: attach to the user's channel and read what they missed since
``Last-Event-ID`` (``attach.attach_and_replay``), then go live, dropping any live event
the backlog already covered. Each frame's id is the stream's position in both Redis
streams it follows, ``<user stream id>~<broadcast stream id>`` (``replay.Position``).
Nothing here queries the follow graph: it only relays what the workers pushed.
"""

from __future__ import annotations

import json
import logging
import random
import socket

import redis
from flask import Response, current_app, request, session
from flask_login import current_user
from gevent import getcurrent

from ..events.types import BUILTIN_TYPES, RESYNC, SERVER_CLOSED, STREAM_TYPES
from ..extensions import db
from ..jsonapi import api_login_required
from ..logs import request_id as current_request_id
from ..metrics.instruments import STREAM_SENT
from ..webserver import SOCKET_KEY, WIRE_KEY
from . import bp, sse
from .attach import attach_and_replay, listener
from .registry import BROADCAST_GAP, GAP, Registry, Subscription
from .replay import Position, Replay, SharedEvent, StreamEvent, parse_position
from .wire import DirectWriter, Unsent

log = logging.getLogger(__name__)


def requested_last_id() -> str | None:
    """Return the client's last event id (header, or ``?last_event_id=``) if well-formed.

    A position (``<user id>~<broadcast id>``) or the old plain form (a user stream id)."""
    raw = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    if not raw:
        return None
    try:
        parse_position(raw.strip())
    except ValueError:
        return None  # garbage is treated as a first connection, never echoed
    return raw.strip()


@bp.get("/notifications")  # behind admission.StreamAdmission: refused cheaply in a storm
@api_login_required
def notifications_stream():
    """Stream the logged-in user's notifications; only theirs, whatever the query says."""
    user_id = current_user.id
    session_id = session.get("sid")
    who = listener()
    # Give the database connection back now: the stream may stay open for hours, and
    # thousands of them must not hold a connection pool that has a few.
    db.session.close()
    # A first connection starts "now": every live event after the subscription counts.
    registry, sub, backlog = attach_and_replay(user_id, session_id, requested_last_id(), **who)
    cfg = current_app.config
    retry_ms = cfg["SSE_RETRY_MS"] + random.randint(0, cfg["SSE_RETRY_JITTER_MS"])
    sock = request.environ.get(SOCKET_KEY) or request.environ.get("gunicorn.socket")
    frame = _catch_all_frame if request.args.get("catch_all") in ("1", "true") else _frame
    body = _event_stream(
        registry, sub, backlog, retry_ms, cfg["SSE_HEARTBEAT_SECONDS"], sock, frame,
        {"request_id": current_request_id()}, request.environ.get(WIRE_KEY),
    )  # fmt: skip
    # direct_passthrough: the server iterates our generator itself (it already yields bytes),
    # without werkzeug's two wrapping iterators, which every idle stream would keep.
    response = Response(body, mimetype="text/event-stream", direct_passthrough=True)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


def _frame(event: StreamEvent, position: str) -> bytes:
    return sse.format_event(event.data, event=event.type, id=position)


# The types a page names in addEventListener; with ``?catch_all=1`` every other type (another
# service's) comes as an unnamed message, {"type": ..., "data": {...}}, so one ``message``
# listener sees types the page has never heard of. Ids, order and replay are the same.
NAMED_TYPES = frozenset(BUILTIN_TYPES + STREAM_TYPES)


def _catch_all_frame(event: StreamEvent, position: str) -> bytes:
    if event.type in NAMED_TYPES:
        return _frame(event, position)
    envelope = '{"type":' + json.dumps(event.type) + ',"data":' + event.data + "}"
    return sse.format_event(envelope, id=position)


def _resync_frame(position: Position) -> bytes:
    return sse.format_event(json.dumps({"reason": "history_gap"}), event=RESYNC, id=str(position))


def _event_stream(
    registry: Registry,
    sub: Subscription,
    backlog: Replay,
    retry_ms: int,
    heartbeat: float,
    sock=None,
    frame=_frame,
    request_id: dict | None = None,
    wire=None,
):
    """Yield the SSE body: retry hint, backlog (or resync), then live events and heartbeats.

    It runs after the request has ended, in the connection's greenlet (its log lines carry
    ``request_id``, a logging ``extra``). Under our server (``wire``: how it frames a write),
    live events may also be sent while it waits (``wire.DirectWriter``).
    """
    sub.owner = getcurrent()
    hangup = watch_for_hangup(sock, sub)
    try:
        position = backlog.position
        yield from _opening_frames(backlog, registry, sub, frame, retry_ms)
        # This frame lives as long as the stream: let it hold nothing already sent (the
        # replayed backlog, the last frames) while it idles.
        del backlog
        if sock is not None and wire is not None:  # our server: events and heartbeats are sent directly
            sub.writer = registry.heartbeats.start(DirectWriter(sock, wire, position, frame))
        while True:
            items = frames = None
            items = sub.wait(None if sub.writer is not None else heartbeat)
            if items and isinstance(items[0], Unsent):
                sock.sendall(items.pop(0))  # the rest of a frame sent while waiting: first
            if sub.closed:
                yield from _last_words(sub.close_reason, retry_ms)
                return
            if not items:
                yield sse.format_comment("heartbeat")
                continue
            frames = _frames_for(items, registry, sub, position, frame)
            yield from frames
    except redis.RedisError:
        log.info("stream of user %s ended: Redis unavailable during catch-up", sub.user_id, extra=request_id)
    except OSError:
        pass  # the client went away while the rest of a frame was being sent
    finally:
        sub.writer = None
        if hangup is not None:
            hangup.stop()
        registry.detach(sub)


def _opening_frames(backlog: Replay, registry: Registry, sub: Subscription, frame, retry_ms: int) -> list[bytes]:
    """Return what a stream sends first: the retry hint, a resync after a gap, the replayed backlog."""
    opening = [sse.format_retry(retry_ms)]
    if backlog.gap:
        opening.append(_resync_frame(backlog.position))
    opening += _frames_for(backlog.events, registry, sub, backlog.position, frame, replayed=True)
    return opening


def _frames_for(
    items: list, registry: Registry, sub: Subscription, position: Position, frame, replayed: bool = False
) -> list[bytes]:
    """Return the frames for what arrived (or was ``replayed``), moving ``position`` past each.

    A ``GAP`` (the user's channel was cut off and is back) re-reads the user's stream from
    the position; a ``BROADCAST_GAP`` the broadcast stream, filtered for the user. Events at
    or before the position are dropped (already sent, from the backlog or live).
    """
    frames: list[bytes] = []
    for item in items:
        caught_up = item is GAP or item is BROADCAST_GAP
        live = not (caught_up or replayed)
        batch = _catch_up(item, registry, sub, position, frames) if caught_up else [item]
        for event in batch:
            key = position.take(event)
            if key is None:
                continue  # already sent
            frames.append(frame(event, str(position)))
            if live:  # not a catch-up: time from its write to Redis until sent
                STREAM_SENT.observe_since_ms(key[0])
    return frames


def _catch_up(gap, registry: Registry, sub: Subscription, position: Position, frames: list) -> list[StreamEvent]:
    """Re-read the stream whose channel was cut, from ``position``; after a gap in it, append a resync."""
    if gap is GAP:
        caught_up = registry.broker.replay(sub.user_id, position.user)
        if caught_up.gap and caught_up.last_id:
            position.move_user(caught_up.last_id)
        events = caught_up.events
    else:
        caught_up = registry.broker.replay_broadcasts(position.broadcast)
        if caught_up.gap and caught_up.last_id:
            position.move_broadcast(caught_up.last_id)
        events = [e for e in caught_up.events if isinstance(e, SharedEvent) and sub.wants(e)]
    if caught_up.gap:
        frames.append(_resync_frame(position))
    return events


# Closes after which no event is sent: nobody reads (overflow, hang-up) or the process is going
# (that one sends only a reconnect hint, see ``_reconnect_hint``).
SILENT_CLOSES = ("overflow", "shutdown", "client_gone")


def _last_words(reason: str | None, retry_ms: int) -> list[bytes]:
    """Return what a stream closed for ``reason`` sends before it ends."""
    if reason == "shutdown":
        return [_reconnect_hint(retry_ms)]
    if reason in SILENT_CLOSES:
        return []
    return [sse.format_event(json.dumps({"reason": reason}), event=SERVER_CLOSED)]


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
