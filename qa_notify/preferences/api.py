"""JSON endpoints for preferences: ``GET``/``PUT /api/preferences`` (the channels matrix, email settings)."""

from __future__ import annotations

from flask import jsonify
from flask_login import current_user

from ..events.announce import CHANNELS
from ..events.types import MUTEABLE_TYPES
from ..extensions import db
from ..i18n import LANGUAGES, check_locale
from ..jsonapi import APIError, api_login_required, field, json_body
from ..mail.preferences import MAX_ADDRESS, email_preferences, normalise_address, set_email_preferences
from ..models import EMAIL_MODES
from . import bp
from .channels import channel_matrix, muted_types, parse_matrix, set_channel_matrix, set_muted_types

SETTINGS = ("channels", "muted", "email", "email_mode", "locale")


@bp.get("/api/preferences")
@api_login_required
def api_preferences():
    """Return the channels matrix (and the types off everywhere, ``muted``) and the email settings."""
    return jsonify(
        channels=channel_matrix(current_user.id),
        muted=muted_types(current_user.id),
        available=list(MUTEABLE_TYPES),
        available_channels=list(CHANNELS),
        locale=current_user.locale,
        available_locales=LANGUAGES,
        **email_preferences(current_user),
    )


@bp.put("/api/preferences")
@api_login_required
def api_set_preferences():
    """Change the channels matrix (``channels``: only the types and channels given), or replace
    the types off everywhere (``muted``), the email address and mode, the language (``locale``,
    null to follow the browser): each optional."""
    data = json_body()
    if not set(SETTINGS) & data.keys():
        raise APIError(
            422, "'channels' or 'muted' is required (or 'email' / 'email_mode' to change only the email settings)"
        )
    if "channels" in data and "muted" in data:
        raise APIError(422, "give 'channels' or 'muted', not both")
    muted = field(data, "muted", list, required=False)
    if muted is not None and not all(isinstance(t, str) for t in muted):
        raise APIError(422, "'muted' must be a list of event type names")
    changes = {}
    if "email" in data:
        changes["email"] = field(data, "email", str, required=False, max_length=MAX_ADDRESS) or None
    if "email_mode" in data:
        changes["email_mode"] = field(data, "email_mode", str)
    try:
        matrix = parse_matrix(data["channels"]) if "channels" in data else None
        locale = check_locale(data["locale"]) if "locale" in data else current_user.locale
        if changes.get("email"):
            normalise_address(changes["email"])  # refuse before anything is saved
        if "email_mode" in changes and changes["email_mode"] not in EMAIL_MODES:
            raise ValueError(f"'email_mode' must be one of {', '.join(EMAIL_MODES)}")
        if muted is not None:
            set_muted_types(current_user.id, muted)
        if matrix is not None:
            set_channel_matrix(current_user.id, matrix)
        if changes:
            set_email_preferences(current_user.id, changes)
        if locale != current_user.locale:
            current_user.locale = locale
            db.session.commit()
    except ValueError as exc:
        raise APIError(422, str(exc)) from None
    return api_preferences()
