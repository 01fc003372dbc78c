"""Changing your password: every other session ends and every open stream closes."""

from __future__ import annotations

from flask import jsonify
from flask_babel import gettext as _
from flask_login import current_user

from ..extensions import db
from ..jsonapi import APIError, api_login_required, field, json_body
from . import bp
from .service import MAX_PASSWORD, MIN_PASSWORD, invalidate_sessions, start_session


@bp.put("/api/me/password")
@api_login_required
def api_change_password():
    """Change the password; other sessions are signed out, this one stays signed in."""
    data = json_body()
    current = field(data, "current_password", max_length=10_000, strip=False)
    new = field(data, "new_password", max_length=MAX_PASSWORD, strip=False)
    user = current_user._get_current_object()
    if not user.check_password(current):
        raise APIError(403, _("current password is wrong"))
    if len(new) < MIN_PASSWORD:
        raise APIError(422, _("password must be %(low)d-%(high)d characters", low=MIN_PASSWORD, high=MAX_PASSWORD))
    user.set_password(new)
    db.session.commit()
    invalidate_sessions(user, reason="password_changed")
    start_session(user)
    return jsonify(ok=True)
