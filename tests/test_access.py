"""Who may do what: every API route for anonymous users, members, moderators and admins."""

from __future__ import annotations

import pytest

ANON, USER, MOD, ADMIN = "anonymous", "user", "moderator", "admin"
PUSH_SUBSCRIPTION = {
    "endpoint": "https://fcm.googleapis.com/fcm/send/access-matrix",
    "expirationTime": None,
    "keys": {
        # A P-256 public key (uncompressed point) and a 16-byte auth secret, as a browser makes them.
        "p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
        "auth": "BTBZMqHH6r4Tts7J_aSIgg",
    },
}

# (method, path, body, {role: expected status})
ROUTES = [
    ("GET", "/api/me", None, {ANON: 401, USER: 200, MOD: 200, ADMIN: 200}),
    ("GET", "/api/topics", None, {ANON: 200, USER: 200, MOD: 200, ADMIN: 200}),
    ("POST", "/api/topics", {"name": "new-topic"}, {ANON: 401, USER: 403, MOD: 201, ADMIN: 201}),
    ("POST", "/api/topics/{topic}/follow", None, {ANON: 401, USER: 200, MOD: 200, ADMIN: 200}),
    ("DELETE", "/api/topics/{topic}/follow", None, {ANON: 401, USER: 200, MOD: 200, ADMIN: 200}),
    ("POST", "/api/questions", {"title": "Why?", "topics": ["general"]}, {ANON: 401, USER: 201, MOD: 201, ADMIN: 201}),
    ("GET", "/api/questions/{question}", None, {ANON: 200, USER: 200, MOD: 200, ADMIN: 200}),
    ("POST", "/api/questions/{question}/follow", None, {ANON: 401, USER: 200, MOD: 200, ADMIN: 200}),
    ("POST", "/api/questions/{question}/answers", {"body": "Because."}, {ANON: 401, USER: 201, MOD: 201, ADMIN: 201}),
    ("POST", "/api/users/{other}/follow", None, {ANON: 401, USER: 200, MOD: 200, ADMIN: 200}),
    ("PUT", "/api/users/{other}/role", {"role": "moderator"}, {ANON: 401, USER: 403, MOD: 403, ADMIN: 200}),
    ("GET", "/api/notifications", None, {ANON: 401, USER: 200, MOD: 200, ADMIN: 200}),
    ("GET", "/api/notifications/unread_count", None, {ANON: 401, USER: 200, MOD: 200, ADMIN: 200}),
    ("POST", "/api/notifications/read", {"all": True}, {ANON: 401, USER: 200, MOD: 200, ADMIN: 200}),
    ("POST", "/api/notifications/unread", {"ids": [1]}, {ANON: 401, USER: 200, MOD: 200, ADMIN: 200}),
    ("POST", "/api/notifications/archive", {"ids": [1]}, {ANON: 401, USER: 200, MOD: 200, ADMIN: 200}),
    ("GET", "/api/preferences", None, {ANON: 401, USER: 200, MOD: 200, ADMIN: 200}),
    ("PUT", "/api/preferences", {"muted": []}, {ANON: 401, USER: 200, MOD: 200, ADMIN: 200}),
    ("GET", "/api/preferences/quiet", None, {ANON: 401, USER: 200, MOD: 200, ADMIN: 200}),
    ("PUT", "/api/preferences/quiet", {"time_zone": "Asia/Tokyo"}, {ANON: 401, USER: 200, MOD: 200, ADMIN: 200}),
    ("POST", "/api/preferences/snooze", {"minutes": 60}, {ANON: 401, USER: 200, MOD: 200, ADMIN: 200}),
    ("DELETE", "/api/preferences/snooze", None, {ANON: 401, USER: 200, MOD: 200, ADMIN: 200}),
    ("POST", "/api/admin/broadcast", {"message": "hello"}, {ANON: 401, USER: 403, MOD: 403, ADMIN: 202}),
    ("GET", "/api/admin/broadcasts", None, {ANON: 401, USER: 403, MOD: 403, ADMIN: 200}),
    ("GET", "/api/notifications/poll?timeout=0", None, {ANON: 401, USER: 200, MOD: 200, ADMIN: 200}),
    ("GET", "/api/admin/deliveries/failed", None, {ANON: 401, USER: 403, MOD: 403, ADMIN: 200}),
    ("POST", "/api/admin/deliveries/{question}/retry", None, {ANON: 401, USER: 403, MOD: 403, ADMIN: 404}),
    ("GET", "/api/admin/live", None, {ANON: 401, USER: 403, MOD: 403, ADMIN: 200}),
    # Watch levels (issue 18).
    ("GET", "/api/questions/{question}/watch", None, {ANON: 401, USER: 200, MOD: 200, ADMIN: 200}),
    ("PUT", "/api/questions/{question}/watch", {"level": "muted"}, {ANON: 401, USER: 200, MOD: 200, ADMIN: 200}),
    ("PUT", "/api/topics/{topic}/watch", {"level": "watching"}, {ANON: 401, USER: 200, MOD: 200, ADMIN: 200}),
    # Web Push (qa_notify.push): a browser's subscription on a default push service's host.
    ("GET", "/api/push/subscriptions", None, {ANON: 401, USER: 200, MOD: 200, ADMIN: 200}),
    ("POST", "/api/push/subscriptions", PUSH_SUBSCRIPTION, {ANON: 401, USER: 201, MOD: 201, ADMIN: 201}),
    ("DELETE", "/api/push/subscriptions/{question}", None, {ANON: 401, USER: 404, MOD: 404, ADMIN: 404}),
]


@pytest.fixture
def world(app, make_user, api):
    """A topic, a question and another user to act on."""
    from qa_notify.extensions import db
    from qa_notify.models import Question, Topic

    author = make_user("author")
    other = make_user("other")
    with app.app_context():
        topic = Topic(name="general")
        question = Question(title="Existing", body="", author_id=author.id)
        db.session.add_all([topic, question])
        db.session.commit()
        return {"topic": topic.id, "question": question.id, "other": other.id}


@pytest.mark.parametrize("role", [ANON, USER, MOD, ADMIN])
@pytest.mark.parametrize("method, path, body, expected", ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
def test_access_matrix(role, method, path, body, expected, world, api, login_as):
    client = api if role == ANON else login_as(f"{role}-member", role)
    resp = client.client.open(
        path.format(**world),
        method=method,
        json=body,
        headers={"X-CSRFToken": client.token()} if method != "GET" else {},
    )
    assert resp.status_code == expected[role], resp.get_json()
    assert resp.is_json, "API answers are JSON, never a redirect or an HTML page"
    if resp.status_code >= 400:
        assert "error" in resp.get_json()


@pytest.mark.parametrize("path", ["/inbox", "/preferences", "/ask", "/admin", "/admin/deliveries", "/admin/live"])
def test_pages_send_anonymous_visitors_to_login(path, api):
    resp = api.get(path)
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]


def test_admin_pages_are_forbidden_to_members(login_as):
    member = login_as("member")
    assert member.get("/admin").status_code == 403
    assert member.get("/admin/deliveries").status_code == 403
    assert member.get("/admin/live").status_code == 403
    assert login_as("mod", "moderator").get("/admin/live").status_code == 403


@pytest.mark.parametrize("header", [None, "not-a-token"])
def test_state_changes_need_the_csrf_token(header, login_as):
    client = login_as("member")
    headers = {"X-CSRFToken": header} if header else {}
    resp = client.client.post("/api/questions", json={"title": "no token"}, headers=headers)
    assert resp.status_code == 400
    assert "CSRF" in resp.get_json()["error"]


def test_session_cookie_is_httponly_and_samesite(api, make_user):
    make_user("ann")
    resp = api.post("/api/login", {"username": "ann", "password": "correct-horse-9"})
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_logout_ends_the_session(login_as):
    client = login_as("ann")
    assert client.post("/api/logout").status_code == 200
    assert client.get("/api/me").status_code == 401


def test_pages_carry_a_strict_content_security_policy(api):
    csp = api.get("/").headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp


def _cookie(api) -> str:
    return api.client.get_cookie("session").value


def _with_cookie(app, value: str):
    from .conftest import APIClient

    client = APIClient(app.test_client())
    client.client.set_cookie("session", value)
    return client


def test_login_starts_a_fresh_session_so_a_planted_cookie_gains_nothing(app, api, make_user):
    make_user("ann")
    old_token = api.token()
    planted = _cookie(api)  # what an attacker could have put in ann's browser before she logs in
    api.login("ann")
    assert _cookie(api) != planted
    assert _with_cookie(app, planted).get("/api/me").status_code == 401
    # the pre-login CSRF token died with the old session
    resp = api.client.post("/api/questions", json={"title": "t"}, headers={"X-CSRFToken": old_token})
    assert resp.status_code == 400


def test_a_copied_session_cookie_stops_working_at_logout(app, login_as):
    ann = login_as("ann")
    thief = _with_cookie(app, _cookie(ann))
    assert thief.get("/api/me").status_code == 200
    assert ann.post("/api/logout").status_code == 200
    assert thief.get("/api/me").status_code == 401
    assert thief.get("/api/notifications").status_code == 401


def test_logout_ends_only_that_browser(app, login_as):
    laptop = login_as("ann")
    phone = _with_cookie(app, "")
    phone.client.delete_cookie("session")
    phone.login("ann")
    assert laptop.post("/api/logout").status_code == 200
    assert laptop.get("/api/me").status_code == 401
    assert phone.get("/api/me").status_code == 200


def test_keep_me_signed_in_makes_a_lasting_cookie(api, make_user):
    make_user("ann")
    short = api.post("/api/login", {"username": "ann", "password": "correct-horse-9"}).headers["Set-Cookie"]
    assert "Expires" not in short
    api._token = None
    api.post("/api/logout")
    api._token = None
    lasting = api.post("/api/login", {"username": "ann", "password": "correct-horse-9", "remember": True})
    assert "Expires" in lasting.headers["Set-Cookie"]
