"""Conventions of the JSON API: errors as ``{"error": ..., "request_id": ...}``, strict body parsing, role checks."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import abort, request
from flask_login import current_user

from . import strictjson
from .errors import SiteError, error_response


class APIError(SiteError):
    """An error answered as ``{"error": message, "request_id": ...}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, status)


def json_body() -> dict:
    """Return the request's JSON object, or raise a 400 APIError saying what is wrong.

    Parsed with ``strictjson``: invalid UTF-8, lone surrogates, NaN and nesting deeper than
    32 levels are a 400 here, never a RecursionError or a value the database cannot hold.
    """
    if not request.is_json:
        raise APIError(400, "request body must be JSON (Content-Type: application/json)")
    try:
        data = strictjson.loads(request.get_data(cache=True))
    except strictjson.StrictJSONError as exc:
        raise APIError(400, f"request body is not acceptable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise APIError(400, "request body must be a JSON object")
    return data


def field(
    data: dict,
    name: str,
    kind: type = str,
    *,
    required: bool = True,
    max_length: int | None = None,
    default: Any = None,
    strip: bool = True,
) -> Any:
    """Return ``data[name]`` checked for type and length; raise a 422 APIError otherwise.

    Strings are stripped of surrounding white space unless ``strip`` is False (passwords:
    a space is part of a password, on the API as on the HTML forms).
    """
    if name not in data or data[name] is None:
        if required:
            raise APIError(422, f"'{name}' is required")
        return default
    value = data[name]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise APIError(422, f"'{name}' must be {_kind_name(kind)}")
    if kind is str:
        if "\x00" in value:  # PostgreSQL cannot store it, and no person types it
            raise APIError(422, f"'{name}' must not contain NUL characters")
        if strip:
            value = value.strip()
        if required and not value:
            raise APIError(422, f"'{name}' must not be empty")
        if max_length is not None and len(value) > max_length:
            raise APIError(422, f"'{name}' must be at most {max_length} characters")
    return value


def _kind_name(kind: type) -> str:
    return {
        str: "a string",
        int: "an integer",
        list: "a list",
        bool: "true or false",
        dict: "an object",
    }.get(kind, kind.__name__)


def api_login_required(view: Callable) -> Callable:
    """Answer 401 JSON (never a redirect) when nobody is logged in."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        if not current_user.is_authenticated:
            return error_response(401, "login required")
        return view(*args, **kwargs)

    return wrapped


def role_required(*roles: str) -> Callable:
    """Require login and one of ``roles``: 401 for anonymous, 403 for the wrong role."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(*args, **kwargs):
            if not current_user.is_authenticated:
                return error_response(401, "login required")
            if current_user.role not in roles:
                return error_response(403, f"requires role {' or '.join(roles)}")
            return view(*args, **kwargs)

        return api_login_required(wrapped)

    return decorator


def page_role_required(*roles: str) -> Callable:
    """For HTML pages: redirect anonymous users to login, 403 page for the wrong role."""
    from flask_login import login_required

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(*args, **kwargs):
            if current_user.role not in roles:
                abort(403)
            return view(*args, **kwargs)

        return login_required(wrapped)

    return decorator
