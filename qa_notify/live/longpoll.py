"""``GET /api/notifications/poll``: the long-poll fallback, the stream's events as JSON, same ids.

Each event's ``id`` and the answer's ``last_id`` are positions, as on the stream
(``<user stream id>~<broadcast stream id>``); ``after`` takes one, or the old plain form.
"""

from __future__ import annotations

import json

from flask import current_app, jsonify, request, session
from flask_login import current_user

from ..extensions import db
from ..jsonapi import APIError, api_login_required
from . import bp
from .attach import attach_and_replay, listener, read_since
from .replay import parse_position


@bp.get("/api/notifications/poll")
@api_login_required
def api_poll():
    """Long-poll fallback: the events after ``after`` as soon as there are any, else [] at the timeout."""
    after = _after_arg()
    timeout = _timeout_arg(current_app.config["LONG_POLL_MAX_SECONDS"])
    user_id = current_user.id
    session_id = session.get("sid")
    who = listener()
    db.session.close()  # do not hold a database connection while waiting
    registry, sub, backlog = attach_and_replay(user_id, session_id, after, read_newest=True, **who)
    try:
        if after is not None and not backlog.events and not backlog.gap and timeout > 0:
            sub.wait(timeout)
            backlog = read_since(registry, sub, after, read_newest=True)
    finally:
        registry.detach(sub)
    position, events = backlog.position, []
    for event in backlog.events:
        if position.take(event) is not None:
            events.append({"id": str(position), "type": event.type, "data": json.loads(event.data)})
    return jsonify(events=events, resync=backlog.gap, last_id=str(position))


def _after_arg() -> str | None:
    """Return ``?after=``, an event id (a position, or the old plain form), or None; 400 for anything else."""
    after = request.args.get("after") or None
    if after is not None:
        try:
            parse_position(after)
        except ValueError:
            raise APIError(400, "'after' must be an event id like 1700000000000-0~1700000000000-0") from None
    return after


def _timeout_arg(max_wait: float) -> float:
    """Return ``?timeout=`` in seconds (default 25), clamped to 0..``max_wait``; 400 if not a number."""
    raw_timeout = request.args.get("timeout", "25")
    try:
        timeout = min(max(float(raw_timeout), 0.0), max_wait)
    except ValueError:
        raise APIError(400, "'timeout' must be a number of seconds") from None
    if timeout != timeout:  # NaN
        raise APIError(400, "'timeout' must be a number of seconds")
    return timeout
