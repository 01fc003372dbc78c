"""JSON endpoints for the inbox, preferences and the long-poll fallback."""

from __future__ import annotations

import json

import redis
from flask import current_app, jsonify, request, session
from flask_login import current_user

from ..events import bus
from ..extensions import db
from ..jsonapi import APIError, api_login_required, field, json_body
from ..models import MAX_ID, valid_id
from . import bp
from .inbox import list_groups, mark_read, unread_count

MAX_IDS = 1000


def _int_arg(name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.args.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise APIError(400, f"'{name}' must be an integer") from None
    if not low <= value <= high:
        raise APIError(400, f"'{name}' must be between {low} and {high}")
    return value


@bp.get("/api/notifications")
@api_login_required
def api_inbox():
    """Return the inbox items (groups) newest first, with the unread count (of groups)."""
    before = _int_arg("before", None, 1, MAX_ID)
    limit = _int_arg("limit", 20, 1, 100)
    items = list_groups(current_user.id, before, limit)
    return jsonify(items=[n.to_dict() for n in items], unread_count=unread_count(current_user.id))


@bp.get("/api/notifications/unread_count")
@api_login_required
def api_unread_count():
    """Return the number of unread notifications."""
    return jsonify(unread_count=unread_count(current_user.id))


@bp.post("/api/notifications/read")
@api_login_required
def api_mark_read():
    """Mark some (``ids``) or all (``all: true``) notifications read; other tabs are told."""
    data = json_body()
    if data.get("all") is True:
        ids = None
    else:
        ids = field(data, "ids", list)
        if len(ids) > MAX_IDS or not all(valid_id(i) for i in ids):
            raise APIError(
                422,
                f"'ids' must be a list of at most {MAX_IDS} notification ids (1 to {MAX_ID}), or send {{\"all\": true}}",
            )
    changed, count = mark_read(current_user.id, ids)
    return jsonify(marked=changed, unread_count=count)


@bp.get("/api/notifications/poll")
@api_login_required
def api_poll():
    """Long-poll fallback: the events after ``after`` as soon as there are any, else [] at the timeout."""
    from .hub import TooManyStreams
    from .stream import get_hub

    after = request.args.get("after") or None
    if after is not None:
        try:
            bus.parse_event_id(after)
        except ValueError:
            raise APIError(400, "'after' must be an event id like 1700000000000-0") from None
    max_wait = current_app.config["LONG_POLL_MAX_SECONDS"]
    raw_timeout = request.args.get("timeout", "25")
    try:
        timeout = min(max(float(raw_timeout), 0.0), max_wait)
    except ValueError:
        raise APIError(400, "'timeout' must be a number of seconds") from None
    if timeout != timeout:  # NaN
        raise APIError(400, "'timeout' must be a number of seconds")
    user_id = current_user.id
    session_id = session.get("sid")
    db.session.close()  # do not hold a database connection while waiting
    r = bus.redis_client()
    hub = get_hub()
    try:
        sub = hub.attach(user_id, session_id)
        try:
            backlog = bus.replay_since(r, user_id, after)
            if after is not None and not backlog.events and not backlog.gap and timeout > 0:
                sub.wait(timeout)
                backlog = bus.replay_since(r, user_id, after)
        finally:
            hub.detach(sub)
    except TooManyStreams:
        raise APIError(429, "too many open notification streams for this user") from None
    except redis.RedisError:
        raise APIError(503, "notifications are briefly unavailable; retry shortly") from None
    events = [{"id": e.id, "type": e.type, "data": json.loads(e.data)} for e in backlog.events]
    return jsonify(events=events, resync=backlog.gap, last_id=backlog.last_id)
