"""JSON endpoints for the inbox and preferences (the long-poll fallback is ``qa_notify.live.longpoll``)."""

from __future__ import annotations

from flask import jsonify, request
from flask_login import current_user

from ..events.types import MUTEABLE_TYPES
from ..jsonapi import APIError, api_login_required, field, json_body
from ..mail.preferences import MAX_ADDRESS, email_preferences, normalise_address, set_email_preferences
from ..models import EMAIL_MODES, MAX_ID, valid_id
from . import bp
from .inbox import list_groups, mark_read, muted_types, set_muted_types, unread_count

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


@bp.get("/api/preferences")
@api_login_required
def api_preferences():
    """Return the muted event types, the types that can be muted, and the email settings."""
    return jsonify(
        muted=muted_types(current_user.id), available=list(MUTEABLE_TYPES), **email_preferences(current_user)
    )


@bp.put("/api/preferences")
@api_login_required
def api_set_preferences():
    """Replace the muted event types and/or change the email address and mode (each optional)."""
    data = json_body()
    if not {"muted", "email", "email_mode"} & data.keys():
        raise APIError(422, "'muted' is required (or 'email' / 'email_mode' to change only the email settings)")
    muted = field(data, "muted", list, required=False)
    if muted is not None and not all(isinstance(t, str) for t in muted):
        raise APIError(422, "'muted' must be a list of event type names")
    changes = {}
    if "email" in data:
        changes["email"] = field(data, "email", str, required=False, max_length=MAX_ADDRESS) or None
    if "email_mode" in data:
        changes["email_mode"] = field(data, "email_mode", str)
    try:
        if changes.get("email"):
            normalise_address(changes["email"])  # refuse before anything is saved
        if "email_mode" in changes and changes["email_mode"] not in EMAIL_MODES:
            raise ValueError(f"'email_mode' must be one of {', '.join(EMAIL_MODES)}")
        if muted is not None:
            set_muted_types(current_user.id, muted)
        if changes:
            set_email_preferences(current_user.id, changes)
    except ValueError as exc:
        raise APIError(422, str(exc)) from None
    return api_preferences()
