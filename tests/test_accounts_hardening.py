"""Accounts against someone guessing: timing, shared guess budgets, the last admin, file modes."""

from __future__ import annotations

import os
import stat
import statistics
import time

import pytest
from sqlalchemy import text

from config import INSTANCE_DIR
from qa_notify import create_app
from qa_notify.extensions import db

from .conftest import PASSWORD, APIClient


@pytest.fixture
def limited(app_config, app):
    """The app with small limits switched on (the shared database is already empty)."""
    limited = create_app(
        {
            **app_config,
            "RATELIMIT_ENABLED": True,
            "LOGIN_RATE_LIMIT": "3 per minute",
            "REGISTER_RATE_LIMIT": "3 per minute",
        }
    )
    yield limited
    with limited.app_context():
        db.engine.dispose()


def client_at(app, address: str) -> APIClient:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return APIClient(client)


def form_login(client: APIClient, username: str, password: str):
    return client.client.post("/login", data={"username": username, "password": password, "csrf_token": client.token()})


def test_a_missing_username_takes_as_long_as_a_wrong_password(api, make_user):
    make_user("ann")

    def median_seconds(username: str) -> float:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            assert api.post("/api/login", {"username": username, "password": "wrong-password"}).status_code == 401
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    existing, missing = median_seconds("ann"), median_seconds("nobody-here")
    assert missing > existing * 0.5, f"missing user {missing * 1000:.1f} ms vs existing {existing * 1000:.1f} ms"


def test_html_and_json_logins_share_one_budget_per_address(limited, make_user):
    make_user("ann")
    client = client_at(limited, "10.1.1.1")
    statuses = [
        client.post("/api/login", {"username": "ann", "password": "wrong-1"}).status_code,
        form_login(client, "ann", "wrong-2").status_code,
        client.post("/api/login", {"username": "ann", "password": "wrong-3"}).status_code,
        form_login(client, "ann", PASSWORD).status_code,
    ]
    assert statuses == [401, 200, 401, 429]  # the form answers 200 with its error message


def test_guesses_at_one_username_share_a_budget_across_addresses(limited, make_user):
    make_user("ann"), make_user("bob")
    for i in range(3):
        resp = client_at(limited, f"10.2.0.{i}").post("/api/login", {"username": "ann", "password": f"guess-{i}"})
        assert resp.status_code == 401
    assert (
        client_at(limited, "10.2.0.9").post("/api/login", {"username": "ann", "password": PASSWORD}).status_code == 429
    )
    # Another user, from another address, is not affected.
    assert (
        client_at(limited, "10.3.0.1").post("/api/login", {"username": "bob", "password": PASSWORD}).status_code == 200
    )


def test_password_change_is_limited_like_login(limited, make_user):
    make_user("ann")
    client = client_at(limited, "10.4.0.1")
    client.login("ann")
    guesses = [
        client.put("/api/me/password", {"current_password": f"guess-{i}", "new_password": "new-password-1"}).status_code
        for i in range(4)
    ]
    assert guesses == [403, 403, 403, 429]


def test_the_taken_username_answer_is_rate_limited(limited, make_user):
    make_user("ann")
    client = client_at(limited, "10.5.0.1")
    statuses = [
        client.post("/api/register", {"username": "ann", "password": "long-enough-1"}).status_code for _ in range(4)
    ]
    assert statuses == [409, 409, 409, 429]


def test_an_admin_cannot_demote_themselves_through_the_api_or_the_page(login_as):
    admin = login_as("root", role="admin")
    resp = admin.put(f"/api/users/{admin.user_id}/role", {"role": "user"})
    assert resp.status_code == 403 and "own role" in resp.get_json()["error"]
    page = admin.client.post(
        f"/admin/users/{admin.user_id}/role", data={"role": "user", "csrf_token": admin.token()}, follow_redirects=True
    )
    assert "own role" in page.get_data(as_text=True)
    assert admin.get("/api/me").get_json()["role"] == "admin"
    # Changing someone else's role still works, through either.
    other = login_as("member")
    assert admin.put(f"/api/users/{other.user_id}/role", {"role": "moderator"}).get_json()["role"] == "moderator"


def test_a_password_is_the_same_on_the_form_and_the_api(api, app):
    spaced = "  spaced pass  "
    assert api.post("/api/register", {"username": "spacey", "password": spaced}).status_code == 201
    fresh = APIClient(app.test_client())
    assert fresh.post("/api/login", {"username": "spacey", "password": spaced.strip()}).status_code == 401
    resp = form_login(fresh, "spacey", spaced)
    assert resp.status_code == 302  # signed in: the spaces are part of the password everywhere


def test_the_instance_folder_and_the_sqlite_files_are_owner_only(app_config, tmp_path):
    create_app(app_config)
    assert stat.S_IMODE(os.stat(INSTANCE_DIR).st_mode) == 0o700
    path = tmp_path / "private.sqlite"
    private = create_app({**app_config, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}"})
    with private.app_context():
        db.session.execute(text("CREATE TABLE t (x INTEGER)"))
        db.session.execute(text("INSERT INTO t VALUES (1)"))
        db.session.commit()
        files = [p for p in tmp_path.iterdir() if p.name.startswith("private.sqlite")]
        assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files), files
        db.engine.dispose()
