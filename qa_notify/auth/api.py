"""JSON endpoints for accounts: ``/api/csrf``, register, login, logout, me."""

from __future__ import annotations

from flask import jsonify
from flask_babel import gettext as _
from flask_login import current_user
from flask_wtf.csrf import generate_csrf

from ..jsonapi import APIError, api_login_required, field, json_body
from . import bp
from .service import authenticate, end_session, register_user, start_session


@bp.get("/api/csrf")
def csrf_token():
    """Return a CSRF token to send as ``X-CSRFToken`` on every POST, PUT and DELETE."""
    return jsonify(csrf_token=generate_csrf())


@bp.post("/api/register")
def api_register():
    """Create an account and log it in."""
    data = json_body()
    user = register_user(
        field(data, "username", max_length=40),
        field(data, "password", max_length=200, strip=False),
        email=field(data, "email", required=False, max_length=254),
    )
    start_session(user)
    return jsonify(user.to_dict()), 201


@bp.post("/api/login")
def api_login():
    """Log in with username and password."""
    data = json_body()
    user = authenticate(
        field(data, "username", max_length=200), field(data, "password", max_length=10_000, strip=False)
    )
    if user is None:
        raise APIError(401, _("wrong username or password"))
    start_session(user, remember=bool(data.get("remember") is True))
    return jsonify(user.to_dict())


@bp.post("/api/logout")
@api_login_required
def api_logout():
    """Log out this browser and close its notification streams."""
    end_session(current_user._get_current_object())
    return jsonify(ok=True)


@bp.get("/api/me")
@api_login_required
def api_me():
    """Return the logged-in user."""
    return jsonify(current_user.to_dict())
