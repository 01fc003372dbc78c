"""Rate limits on logging in, registering and posting (Flask-Limiter, counted in Redis)."""

from __future__ import annotations

import pytest

from qa_notify import create_app
from qa_notify.extensions import db

from .conftest import APIClient


@pytest.fixture
def limited_app(app_config, app):
    """The app with small limits switched on (the shared database is already empty)."""
    limited = create_app(
        {**app_config, "RATELIMIT_ENABLED": True, "LOGIN_RATE_LIMIT": "3 per minute", "POST_RATE_LIMIT": "2 per minute"}
    )
    yield limited
    with limited.app_context():
        db.engine.dispose()


def test_login_attempts_are_limited_per_address(limited_app, make_user):
    make_user("ann")
    client = APIClient(limited_app.test_client())
    statuses = [
        client.post("/api/login", {"username": "ann", "password": "wrong-password"}).status_code for _ in range(4)
    ]
    assert statuses == [401, 401, 401, 429]
    resp = client.post("/api/login", {"username": "ann", "password": "correct-horse-9"})
    assert resp.status_code == 429
    assert "error" in resp.get_json() and resp.headers.get("Retry-After")


def test_posting_is_limited_per_user(limited_app, make_user):
    make_user("ann"), make_user("bob")
    ann, bob = APIClient(limited_app.test_client()), APIClient(limited_app.test_client())
    ann.login("ann"), bob.login("bob")
    statuses = [ann.post("/api/questions", {"title": f"q{i}"}).status_code for i in range(3)]
    assert statuses == [201, 201, 429]
    # Another user is not affected by ann's limit.
    assert bob.post("/api/questions", {"title": "mine"}).status_code == 201


def test_behind_a_proxy_each_client_address_has_its_own_budget(app_config, app, make_user):
    make_user("ann")
    proxied = create_app(
        {**app_config, "RATELIMIT_ENABLED": True, "LOGIN_RATE_LIMIT": "1 per minute", "PROXY_COUNT": 1}
    )
    client = APIClient(proxied.test_client())

    def attempt(address: str) -> int:
        headers = {"X-Forwarded-For": address}
        return client.post("/api/login", {"username": f"ghost-{address}", "password": "x"}, headers=headers).status_code

    # All requests come from the proxy's own address; the budgets follow the real clients.
    assert [attempt("203.0.113.1"), attempt("203.0.113.2"), attempt("203.0.113.1")] == [401, 401, 429]
    with proxied.app_context():
        db.engine.dispose()
