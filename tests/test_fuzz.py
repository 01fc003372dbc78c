"""Fuzzing: whatever a client sends, the answer is a clear error or a success, never a 500.

Hypothesis throws arbitrary JSON (and non-JSON) at every JSON endpoint, arbitrary query
strings at the GET endpoints, and arbitrary ``Last-Event-ID`` values at the live SSE
stream, where nothing the client sends may come back as an SSE field.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from .live import WebProcess

# Field names the endpoints read, so the fuzz reaches past "missing field" checks.
KNOWN_KEYS = ["username", "password", "current_password", "new_password", "remember", "title", "body",
              "topics", "name", "ids", "all", "muted", "message", "role"]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=60)
    | st.sampled_from(["", " ", "\x00", "admin", "moderator", "user", "new_answers", "python", "x" * 5000])
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
json_bodies = st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=10), json_values, max_size=5) | json_values
raw_bodies = st.binary(max_size=200) | st.sampled_from([b"", b"{", b"null", b'{"title": "\\ud800"}', b"\xff\xfe"])

# Every state-changing JSON endpoint; {q} is a real question, {t} a real topic, {u} another user.
WRITE_ENDPOINTS = [
    ("POST", "/api/register"),
    ("POST", "/api/login"),
    ("PUT", "/api/me/password"),
    ("POST", "/api/topics"),
    ("POST", "/api/questions"),
    ("POST", "/api/questions/{q}/answers"),
    ("POST", "/api/questions/{q}/follow"),
    ("DELETE", "/api/topics/{t}/follow"),
    ("POST", "/api/users/{u}/follow"),
    ("PUT", "/api/users/{u}/role"),
    ("POST", "/api/notifications/read"),
    ("POST", "/api/notifications/unread"),
    ("POST", "/api/notifications/archive"),
    ("PUT", "/api/preferences"),
    ("POST", "/api/admin/broadcast"),
]
READ_ENDPOINTS = ["/api/notifications", "/api/notifications/poll", "/api/questions/{q}", "/api/topics", "/api/me"]
QUERY_KEYS = ["before", "limit", "after", "timeout", "last_event_id", "user", "user_id"]
QUERY_KEYS += ["unread", "type", "question", "archived"]  # the inbox's filters

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def assert_clean(resp) -> None:
    """A success or a JSON error the user can read: never a 500, never a stack trace."""
    body = resp.get_data(as_text=True)
    assert resp.status_code < 500, f"{resp.status_code}: {body[:300]}"
    assert "Traceback" not in body
    if resp.status_code >= 400:
        assert resp.is_json and isinstance(resp.get_json().get("error"), str), body[:300]


@pytest.fixture
def world(app_config, app, login_as, make_user):
    """An admin session plus a question, a topic and another user to aim the fuzz at."""
    app.config["LONG_POLL_MAX_SECONDS"] = 0.05
    admin = login_as("root", role="admin")
    other = make_user("other")
    q = admin.post("/api/questions", {"title": "Fuzz target"}).get_json()["id"]
    t = admin.post("/api/topics", {"name": "fuzzing"}).get_json()["id"]
    return admin, {"q": q, "t": t, "u": other.id}


@pytest.mark.parametrize("method, path", WRITE_ENDPOINTS)
@FUZZ
@given(body=json_bodies)
def test_any_json_body_gets_a_clean_answer(world, method, path, body):
    client, ids = world
    resp = client._send(method, path.format(**ids), body)
    assert_clean(resp)


@pytest.mark.parametrize("method, path", WRITE_ENDPOINTS)
@FUZZ
@given(
    raw=raw_bodies,
    content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"]),
)
def test_any_raw_body_gets_a_clean_answer(world, method, path, raw, content_type):
    client, ids = world
    resp = client.client.open(
        path.format(**ids), method=method, data=raw, content_type=content_type, headers={"X-CSRFToken": client.token()}
    )
    assert_clean(resp)


@pytest.mark.parametrize("path", READ_ENDPOINTS)
@FUZZ
@given(query=st.dictionaries(st.sampled_from(QUERY_KEYS), st.text(max_size=30), max_size=3))
def test_any_query_string_gets_a_clean_answer(world, path, query):
    client, ids = world
    resp = client.get(path.format(**ids), query_string=query)
    assert_clean(resp)


# The SSE stream, over a real connection to the gevent web process.

# An event id is a position in the user's Redis stream, with the broadcast stream's after a "~"
# once the stream has one (``live.replay``): "1700000000000-0" or "1700000000000-0~0-0".
EVENT_ID = r"\d+-\d+(?:~\d+-\d+)?"
SSE_LINE = re.compile(rf"^(retry: \d+|event: [a-z_]+|id: {EVENT_ID}|data: .*|: heartbeat|)$")


@pytest.fixture(scope="module")
def web(redis_url, database_url):
    proc = WebProcess(database_url, redis_url, SSE_HEARTBEAT_SECONDS="0.2").start()
    yield proc
    proc.stop()


def read_until_heartbeat(client: httpx.Client, headers: dict, params: dict) -> tuple[int, str]:
    with client.stream("GET", "/notifications", headers=headers, params=params, timeout=10) as resp:
        if resp.status_code != 200:
            return resp.status_code, resp.read().decode()
        text = ""
        for chunk in resp.iter_text():
            text += chunk
            if ": heartbeat" in text:
                break
        return 200, text


# HTTP header values cannot carry line breaks or surrounding blanks; the query string can.
printable_ids = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.strip)
any_ids = st.text(max_size=40) | st.sampled_from(
    [
        "1-0\nevent: admin",
        "1-0\r\ndata: forged",
        "1-0\x00",
        "0-0",
        "99999999999999-0",
        "123456789012345678901234-0",
        "\u0661\u0662-0",
        "18446744073709551616-1",
    ]
)


def test_last_event_id_never_comes_back_as_a_field(web, login_as):
    login_as("fuzzy")
    poster = login_as("poster")
    fuzzy = web.client("fuzzy")
    qid = poster.post("/api/questions", {"title": "Follow me"}).get_json()["id"]
    assert fuzzy.post(f"/api/questions/{qid}/follow").status_code == 200
    assert poster.post(f"/api/questions/{qid}/answers", {"body": "one"}).status_code == 201

    @settings(max_examples=40, deadline=None)
    @given(header=printable_ids, query=any_ids)
    @example(header="", query="0-0")  # replays from the start: the ids carry the broadcast position
    def check(header, query):
        headers = {"Last-Event-ID": header} if header else {}
        status, text = read_until_heartbeat(fuzzy, headers, {"last_event_id": query})
        if "\x00" in query:  # refused up front, like every request carrying a NUL
            assert status == 400 and "error" in json.loads(text)
            return
        assert status == 200, text[:300]
        for line in text.split("\n"):
            assert SSE_LINE.match(line), f"unexpected line {line!r}"
        for event_id in re.findall(r"^id: (.*)$", text, flags=re.M):
            assert event_id not in (header, query) or re.fullmatch(EVENT_ID, event_id)

    check()
