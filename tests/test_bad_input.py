"""Bad input always gets a clear JSON error: never a 500, never a stack trace."""

from __future__ import annotations

import pytest

CASES = [
    ("/api/register", b"{not json", 400),
    ("/api/register", b"[1, 2]", 400),
    ("/api/register", b'{"username": 5, "password": "long-enough-1"}', 422),
    ("/api/register", b'{"username": "x", "password": "long-enough-1"}', 422),
    ("/api/register", b'{"username": "okname", "password": "short"}', 422),
    ("/api/login", b'{"username": null, "password": "x"}', 422),
    ("/api/questions", b'{"title": ""}', 422),
    ("/api/questions", b'{"title": "t", "topics": "not-a-list"}', 422),
    ("/api/questions", b'{"title": "t", "topics": ["no-such-topic"]}', 422),
    ("/api/questions", b'{"title": "' + b"x" * 500 + b'"}', 422),
    ("/api/questions", b'{"title": "nul \\u0000 byte"}', 422),
    ("/api/questions", b'{"title": "emoji", "body": "\\ud83d\\ude00 \\u00e9"}', 201),
    ("/api/notifications/read", b'{"ids": ["a"]}', 422),
    ("/api/notifications/read", b'{"ids": [1e400]}', 400),  # infinite: not a JSON number we accept
    ("/api/admin/broadcast", b'{"message": ["x"]}', 403),
    # Nesting deep enough to exhaust the parser's recursion was a 500 (RecursionError).
    ("/api/questions", b'{"title": "t", "body": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400),
    ("/api/register", b"[" * 100_000 + b"]" * 100_000, 400),
    ("/api/notifications/read", b'{"ids": ' + b"[" * 40 + b"]" * 40 + b"}", 400),
    ("/api/questions", b'{"title": "t", "body": NaN}', 400),
    ("/api/questions", b'{"title": "bad bytes \xff\xfe"}', 400),
    # Ids beyond any row's range were a 500 (the database overflowed); one bound for all.
    ("/api/notifications/read", b'{"ids": [1180591620717411303424]}', 422),
    ("/api/notifications/read", b'{"ids": [2147483648]}', 422),
    ("/api/notifications/read", b'{"ids": [0]}', 422),
]


@pytest.mark.parametrize("path, body, status", CASES)
def test_malformed_bodies_get_json_errors(path, body, status, login_as):
    client = login_as("member")
    resp = client.client.post(path, data=body, content_type="application/json", headers={"X-CSRFToken": client.token()})
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.is_json
    if status >= 400:
        assert "error" in resp.get_json() and "Traceback" not in resp.get_data(as_text=True)


@pytest.mark.parametrize(
    "path",
    [
        "/api/questions/999999",
        "/api/questions/99999999999999999999999",
        "/api/questions/2147483648",
        "/api/questions/%D9%A1%D9%A2",  # Arabic-Indic digits: not an id
        "/api/questions/0/answers",
        "/api/questions/1180591620717411303424/answers",
        "/api/users/1180591620717411303424/follow",
        "/api/nowhere",
    ],
)
def test_unknown_ids_and_routes_are_404_json(path, login_as):
    client = login_as("member")
    resp = client.get(path) if "answers" not in path else client.post(path, {"body": "x"})
    assert resp.status_code == 404 and "error" in resp.get_json()


def test_huge_bodies_are_413(login_as):
    client = login_as("member")
    resp = client.post("/api/questions", {"title": "big", "body": "x" * 400_000})
    assert resp.status_code == 413 and resp.get_json()["error"] == "request body too large"


def test_huge_ids_in_page_urls_are_404_pages(login_as):
    client = login_as("member")
    for path in ("/questions/1180591620717411303424", "/users/2147483648", "/topics/99999999999"):
        resp = client.get(path)
        assert resp.status_code == 404 and resp.mimetype == "text/html"


@pytest.mark.parametrize(
    "after",
    ["123456789012345678901234-0", "18446744073709551616-0", "1-18446744073709551616", "\u0661\u0662-0", "1-\u00b2"],
)
def test_absurd_event_ids_are_400_not_a_retry_signal(after, login_as):
    resp = login_as("member").get("/api/notifications/poll", query_string={"after": after, "timeout": 0})
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert "Retry-After" not in resp.headers and "event id" in resp.get_json()["error"]


@pytest.mark.parametrize("query", ["before=abc", "limit=0", "limit=100000", "before=-1", "before=2147483648"])
def test_bad_inbox_paging_is_400(query, login_as):
    resp = login_as("member").get(f"/api/notifications?{query}")
    assert resp.status_code == 400 and "error" in resp.get_json()


def test_taken_username_is_409(api, make_user):
    make_user("ann")
    resp = api.post("/api/register", {"username": "ann", "password": "long-enough-1"})
    assert resp.status_code == 409 and resp.get_json()["error"] == "username is taken"


def test_wrong_password_is_401(api, make_user):
    make_user("ann")
    assert api.post("/api/login", {"username": "ann", "password": "nope-nope-nope"}).status_code == 401


def test_production_refuses_the_default_secret_key(monkeypatch):
    from qa_notify import create_app

    monkeypatch.delenv("SECRET_KEY", raising=False)
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        create_app({"ENV_NAME": "production", "SECRET_KEY": "dev-insecure-change-me"})


@pytest.mark.parametrize("path", ["/login", "/register", "/ask"])
def test_nul_characters_in_forms_are_refused_not_crashed(path, login_as):
    client = login_as("member")
    resp = client.client.post(path, data={"username": "a\x00b", "title": "t\x00", "csrf_token": client.token()})
    assert resp.status_code == 400
    assert client.get("/?q=a%00b").status_code == 400


def test_an_unreachable_database_is_a_503_to_retry_not_a_500(app_config):
    from qa_notify import create_app

    broken = create_app({**app_config, "SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://nobody@127.0.0.1:1/none"})
    resp = broken.test_client().get("/api/questions/1")
    assert resp.status_code == 503
    assert resp.headers["Retry-After"] == "3"
    assert "retry" in resp.get_json()["error"]
