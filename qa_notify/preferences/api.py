"""JSON endpoints for preferences: ``GET``/``PUT /api/preferences`` (muted types, email settings)."""

from __future__ import annotations

from flask import jsonify
from flask_login import current_user

from ..events.types import MUTEABLE_TYPES
from ..jsonapi import APIError, api_login_required, field, json_body
from ..mail.preferences import MAX_ADDRESS, email_preferences, normalise_address, set_email_preferences
from ..models import EMAIL_MODES
from ..notifications.inbox import muted_types, set_muted_types
from . import bp


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
