"""Rate limits, in one place: which endpoints are limited, how much, and per what.

Counters live in the same Redis as everything else (Flask-Limiter's Redis or Redis Cluster
storage), so the limits hold across web processes. Password guessing is limited per
client address *and* per attempted username, one budget each shared by the login page
and the JSON login (guessing cannot switch between them to double its tries); changing
your password, which starts with proving the current one, is limited per user and per
address in the same way. Registering is limited per address; asking, answering and
broadcasting per user.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, request
from flask_limiter.util import get_remote_address
from flask_login import current_user

from . import strictjson
from .extensions import limiter


def user_or_address() -> str:
    """Key posting limits on the logged-in user, else on the client address."""
    if current_user.is_authenticated:
        return f"user:{current_user.id}"
    return f"addr:{get_remote_address()}"


def attempted_username() -> str:
    """Key on the username a login tries (form or JSON body); never raises, whatever was sent."""
    name = request.form.get("username") if request.form else None
    if name is None and request.is_json:
        try:
            body = strictjson.loads(request.get_data(cache=True))
        except strictjson.StrictJSONError:
            body = None
        name = body.get("username") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name.strip():
        return f"addr:{get_remote_address()}"
    return "username:" + name.strip()[:40]


# (limit setting, key, budget shared by every endpoint that names it, or None for its own)
Rule = tuple[str, Callable[[], str], str | None]
LOGIN: list[Rule] = [
    ("LOGIN_RATE_LIMIT", get_remote_address, "login-per-address"),
    ("LOGIN_RATE_LIMIT", attempted_username, "login-per-username"),
]
PASSWORD_CHANGE: list[Rule] = [
    ("LOGIN_RATE_LIMIT", get_remote_address, "password-per-address"),
    ("LOGIN_RATE_LIMIT", user_or_address, "password-per-user"),
]
REGISTER: list[Rule] = [("REGISTER_RATE_LIMIT", get_remote_address, None)]
POSTING: list[Rule] = [("POST_RATE_LIMIT", user_or_address, None)]

POLICY: dict[str, tuple[list[Rule], list[str]]] = {
    "auth.api_login": (LOGIN, ["POST"]),
    "auth.login": (LOGIN, ["POST"]),
    "auth.api_change_password": (PASSWORD_CHANGE, ["PUT"]),
    "auth.api_register": (REGISTER, ["POST"]),
    "auth.register": (REGISTER, ["POST"]),
    "qa.api_ask": (POSTING, ["POST"]),
    "qa.ask": (POSTING, ["POST"]),
    "qa.api_answer": (POSTING, ["POST"]),
    "qa.answer": (POSTING, ["POST"]),
    "admin.api_broadcast": (POSTING, ["POST"]),
    "admin.broadcast_page": (POSTING, ["POST"]),
}


def apply_rate_limits(app: Flask) -> None:
    """Bind the limiter to ``app`` and limit the endpoints in the policy."""
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config["REDIS_URL"] or "memory://")
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    limiter.init_app(app)
    for endpoint, (rules, methods) in POLICY.items():
        view = app.view_functions.get(endpoint)
        if view is None:
            continue
        for setting, key, scope in rules:
            limit = app.config[setting]
            if scope is None:
                view = limiter.limit(limit, key_func=key, methods=methods)(view)
            else:
                view = limiter.shared_limit(limit, scope=scope, key_func=key, methods=methods)(view)
        app.view_functions[endpoint] = view
