"""JSON endpoints for the inbox: list (filtered), mark read or unread, archive, unread count (preferences are ``qa_notify.preferences``, the long-poll fallback ``qa_notify.live.longpoll``)."""

from __future__ import annotations

from flask import jsonify, request
from flask_login import current_user

from ..jsonapi import APIError, api_login_required, field, json_body
from ..models import MAX_ID, valid_id
from . import bp
from .inbox import list_groups, mark_read, unread_count
from .triage import archive, mark_unread, parse_filter

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
    found, errors = parse_filter(request.args)
    if errors:
        raise APIError(422, "; ".join(errors))
    items = list_groups(current_user.id, before, limit, found.where())
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


def _item_ids() -> list[int]:
    """Return the body's ``ids`` (inbox item ids), or raise a 422 APIError."""
    ids = field(json_body(), "ids", list)
    if not ids or len(ids) > MAX_IDS or not all(valid_id(i) for i in ids):
        raise APIError(422, f"'ids' must be a list of 1 to {MAX_IDS} notification ids (1 to {MAX_ID})")
    return ids


@bp.post("/api/notifications/unread")
@api_login_required
def api_mark_unread():
    """Mark some read items (every part) unread again; other tabs are told."""
    changed, count = mark_unread(current_user.id, _item_ids())
    return jsonify(marked=changed, unread_count=count)


@bp.post("/api/notifications/archive")
@api_login_required
def api_archive():
    """Archive some items (every part; unread ones are read too); other tabs are told."""
    changed, count = archive(current_user.id, _item_ids())
    return jsonify(archived=changed, unread_count=count)
