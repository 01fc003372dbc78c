"""Rate limits, in one place: which endpoints are limited, how much, and per what.

Counters live in the same Redis as everything else (Flask-Limiter's Redis storage), so the
limits hold across web processes. Logging in and registering are limited per client
address (against password guessing and sign-up floods); asking, answering and
broadcasting per user.
"""

from __future__ import annotations

from flask import Flask
from flask_limiter.util import get_remote_address
from flask_login import current_user

from .extensions import limiter


def user_or_address() -> str:
    """Key posting limits on the logged-in user, else on the client address."""
    if current_user.is_authenticated:
        return f"user:{current_user.id}"
    return f"addr:{get_remote_address()}"


def _policy(app: Flask) -> dict[str, tuple[str, object]]:
    cfg = app.config
    return {
        "auth.api_login": (cfg["LOGIN_RATE_LIMIT"], get_remote_address),
        "auth.login": (cfg["LOGIN_RATE_LIMIT"], get_remote_address),
        "auth.api_register": (cfg["REGISTER_RATE_LIMIT"], get_remote_address),
        "auth.register": (cfg["REGISTER_RATE_LIMIT"], get_remote_address),
        "qa.api_ask": (cfg["POST_RATE_LIMIT"], user_or_address),
        "qa.ask": (cfg["POST_RATE_LIMIT"], user_or_address),
        "qa.api_answer": (cfg["POST_RATE_LIMIT"], user_or_address),
        "qa.answer": (cfg["POST_RATE_LIMIT"], user_or_address),
        "admin.api_broadcast": (cfg["POST_RATE_LIMIT"], user_or_address),
        "admin.broadcast_page": (cfg["POST_RATE_LIMIT"], user_or_address),
    }


def apply_rate_limits(app: Flask) -> None:
    """Bind the limiter to ``app`` and limit the POSTs of the endpoints in the policy."""
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config["REDIS_URL"] or "memory://")
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    limiter.init_app(app)
    for endpoint, (limit, key) in _policy(app).items():
        view = app.view_functions.get(endpoint)
        if view is not None:
            app.view_functions[endpoint] = limiter.limit(limit, key_func=key, methods=["POST"])(view)
