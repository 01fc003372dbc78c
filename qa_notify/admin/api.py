"""JSON endpoints for admins: broadcasts."""

from __future__ import annotations

from flask import current_app, jsonify
from flask_login import current_user

from ..jsonapi import APIError, field, json_body, role_required
from . import bp
from .service import broadcast_history, send_broadcast


@bp.post("/api/admin/broadcast")
@role_required("admin")
def api_broadcast():
    """Send an announcement to everyone, or to one role; delivery happens in the workers."""
    data = json_body()
    message = field(data, "message", required=False, default="")
    if not message.strip():
        raise APIError(422, "'message' must not be empty")
    broadcast = send_broadcast(
        current_user._get_current_object(),
        message,
        field(data, "role", required=False),
        current_app.config["BROADCAST_MAX_LENGTH"],
    )
    return jsonify(broadcast_id=broadcast.id), 202


@bp.get("/api/admin/broadcasts")
@role_required("admin")
def api_broadcasts():
    """List past broadcasts with their reach."""
    return jsonify(broadcasts=broadcast_history())
