"""The external producers' entry point, ``qa:ingest``, as a careless or hostile producer uses it.

Whatever an entry holds, it is settled on its own: a valid envelope becomes exactly one
event for its user, anything else is acknowledged and copied to the dead-letter stream
with a reason, and the worker goes on. Entries are written as raw bytes, the way any
Redis client in any language can write them.
"""

from __future__ import annotations

import json

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from qa_notify.events import channels, ingest
from qa_notify.events.connections import make_client
from qa_notify.extensions import db
from qa_notify.models import Notification, OutboxEvent


@pytest.fixture
def raw(app) -> redis.Redis:
    """A client that writes and reads bytes, as a non-Python producer would."""
    return make_client(app.config["REDIS_URL"], decode=False)


def run_ingest(app) -> int:
    return app.extensions["celery"].tasks["workers.ingest_external"].apply().get()


def envelope(**fields) -> bytes:
    return json.dumps(fields).encode()


def delivered(app, r, user_id: int, marker: str) -> tuple[int, int]:
    """How many inbox rows and how many stream entries carry ``marker`` for this user."""
    with app.app_context():
        rows = db.session.scalars(
            select(OutboxEvent.payload).join(Notification).where(Notification.user_id == user_id)
        ).all()
    in_inbox = sum(1 for p in rows if p.get("marker") == marker)
    in_stream = sum(1 for _, f in r.xrange(channels.user_stream(user_id)) if json.loads(f["d"]).get("marker") == marker)
    return in_inbox, in_stream


def dead_reasons(r) -> list[str]:
    return [f["reason"] for _, f in r.xrange(channels.DEAD_LETTER_STREAM)]


def pending(r) -> int:
    return r.xpending(channels.INGEST_STREAM, channels.INGEST_GROUP)["pending"]


POISON = {
    "bytes that are not UTF-8": b'{"user": "alice", "type": "deploy", "payload": {"text": "\xff\xfe"}}',
    "nested 5,000 deep": b'{"user": "alice", "type": "deploy", "payload": {"x": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
    "a user id of 10**30": envelope(user=10**30, type="deploy", payload={}),
    "a lone surrogate": b'{"user": "alice", "type": "deploy", "payload": {"text": "\\ud800"}}',
    "NaN": b'{"user": "alice", "type": "deploy", "payload": {"n": NaN}}',
    "a server field": envelope(user="alice", type="deploy", payload={"notification_id": 1}),
    "a built-in type": envelope(user="alice", type="broadcast", payload={"message": "I am the admin"}),
}


def test_poison_entries_never_strand_the_valid_ones_beside_them(app, r, raw, make_user):
    alice = make_user("alice")
    for i, poison in enumerate(POISON.values()):
        raw.xadd(
            channels.INGEST_STREAM, {"envelope": envelope(user="alice", type="deploy", payload={"marker": f"v{i}"})}
        )
        raw.xadd(channels.INGEST_STREAM, {"envelope": poison})
    assert run_ingest(app) == len(POISON)
    for i in range(len(POISON)):
        assert delivered(app, r, alice.id, f"v{i}") == (1, 1)
    reasons = dead_reasons(r)
    assert len(reasons) == len(POISON) and pending(r) == 0
    for needle in ("UTF-8", "nested more than", "no such user", "surrogate", "NaN", "notification_id", "site's own"):
        assert any(needle in reason for reason in reasons), (needle, reasons)
    # The lone surrogate was refused before it could become an outbox row nobody can send.
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(OutboxEvent)) == len(POISON)
    # The dead-letter stream is readable by any client: bad bytes are written as \xNN.
    assert any("\\xff\\xfe" in f["envelope"] for _, f in r.xrange(channels.DEAD_LETTER_STREAM))


def test_producer_events_carry_the_fixed_source_and_cannot_pass_for_the_site(app, r, raw, make_user):
    alice = make_user("alice")
    raw.xadd(channels.INGEST_STREAM, {"envelope": envelope(user="alice", type="deploy", payload={"text": "v2"})})
    raw.xadd(channels.INGEST_STREAM, {"envelope": envelope(user="alice", type="deploy", payload={"source": "admin"})})
    raw.xadd(channels.INGEST_STREAM, {"envelope": envelope(user="alice", type="deploy", payload={"v": 99})})
    assert run_ingest(app) == 1
    (_, fields), *_ = r.xrange(channels.user_stream(alice.id))
    data = json.loads(fields["d"])
    assert data["source"] == "external" and data["v"] == 1 and isinstance(data["notification_id"], int)
    assert len(dead_reasons(r)) == 2


def test_builtin_types_are_allowed_only_when_configured(app, r, raw, make_user):
    alice = make_user("alice")
    app.config["INGEST_BUILTIN_TYPES"] = ("broadcast",)
    raw.xadd(channels.INGEST_STREAM, {"envelope": envelope(user="alice", type="broadcast", payload={"message": "hi"})})
    assert run_ingest(app) == 1
    (_, fields), *_ = r.xrange(channels.user_stream(alice.id))
    assert fields["t"] == "broadcast" and json.loads(fields["d"])["source"] == "external"


def test_an_event_for_a_role_is_written_once_for_all_of_it(app, r, raw, make_user):
    alice, bob = make_user("alice"), make_user("bob", role="moderator")
    raw.xadd(
        channels.INGEST_STREAM, {"envelope": envelope(role="moderator", type="report", payload={"marker": "mods"})}
    )
    assert run_ingest(app) == 1
    assert delivered(app, r, bob.id, "mods") == (1, 0)  # an inbox row; nothing in his own stream
    assert delivered(app, r, alice.id, "mods") == (0, 0)
    [(_, fields)] = r.xrange(channels.broadcast_stream())  # one entry for every moderator's streams
    assert (fields["t"], fields["r"], fields["a"]) == ("report", "moderator", "")
    assert json.loads(fields["d"]) == {"marker": "mods", "v": 1, "source": "external"}


def test_an_entry_read_again_after_a_crash_becomes_one_event(app, r, raw, make_user, monkeypatch):
    """Redis drops the connection after the event was committed but before the entry was acknowledged."""
    alice = make_user("alice")
    raw.xadd(channels.INGEST_STREAM, {"envelope": envelope(user="alice", type="deploy", payload={"marker": "once"})})
    client_class = type(app.extensions["qa_redis"])  # Redis, or RedisCluster
    real_xack = client_class.xack

    def xack_fails_once(self, *args):
        monkeypatch.setattr(client_class, "xack", real_xack)
        raise redis.ConnectionError("connection reset by peer")

    monkeypatch.setattr(client_class, "xack", xack_fails_once)
    with pytest.raises(redis.ConnectionError):
        run_ingest(app)
    assert pending(r) == 1  # not acknowledged: it will be read again
    monkeypatch.setattr(ingest, "RECLAIM_IDLE_MS", 0)
    assert run_ingest(app) == 1  # reclaimed and settled: acknowledged, no second event
    assert pending(r) == 0 and delivered(app, r, alice.id, "once") == (1, 1)
    assert dead_reasons(r) == []


def test_an_entry_abandoned_too_often_is_dead_lettered(app, r, raw, make_user, monkeypatch):
    make_user("alice")
    app.config["INGEST_MAX_DELIVERIES"] = 2
    raw.xadd(channels.INGEST_STREAM, {"envelope": envelope(user="alice", type="deploy", payload={})})
    r.xgroup_create(channels.INGEST_STREAM, channels.INGEST_GROUP, id="0")
    # Two workers read it and died before settling it.
    r.xreadgroup(channels.INGEST_GROUP, "died-1", {channels.INGEST_STREAM: ">"})
    r.xclaim(channels.INGEST_STREAM, channels.INGEST_GROUP, "died-2", 0, [r.xrange(channels.INGEST_STREAM)[0][0]])
    monkeypatch.setattr(ingest, "RECLAIM_IDLE_MS", 0)
    assert run_ingest(app) == 0
    assert pending(r) == 0 and dead_reasons(r) == ["read 2 times without being settled"]


# -- the property: any mix of entries, every valid one delivered once, every other dead-lettered

USERS = ["alice", "bob"]
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**80), 2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)
payloads = st.dictionaries(
    st.text(max_size=8).filter(lambda k: k not in ("notification_id", "v", "source", "marker")),
    json_values,
    max_size=4,
)


@st.composite
def valid_entries(draw):
    body = {
        "user": draw(st.sampled_from(USERS)),
        "type": draw(st.from_regex(r"\A[a-z][a-z0-9_]{0,31}\Z").filter(lambda t: t not in RESERVED)),
        "payload": {**draw(payloads), "marker": None},  # the marker is filled in per example
    }
    return ("valid", body)


RESERVED = {"read", "quiet", "resync", "server_closed", "new_question", "new_answers", "broadcast"}
invalid_bytes = st.binary(max_size=60).filter(lambda b: not b.strip().startswith(b"{"))
invalid_json = json_values.filter(lambda v: not (isinstance(v, dict) and "type" in v))
deep = st.integers(40, 3000).map(lambda n: b'{"user": "alice", "type": "x", "payload": ' + b"[" * n + b"]" * n + b"}")
huge_user = st.integers(2**31, 2**100).map(lambda n: envelope(user=n, type="x", payload={}))
bad_text = st.sampled_from([b"\\ud800", b"\\udfff", b"\xff", b"\xc3\x28", b"\xed\xa0\x80"]).map(
    lambda t: b'{"user": "alice", "type": "x", "payload": {"t": "' + t + b'"}}'
)
server_field = st.sampled_from(["notification_id", "v", "source"]).map(
    lambda k: envelope(user="alice", type="x", payload={k: 1})
)
invalid_entries = st.tuples(
    st.just("invalid"),
    invalid_bytes
    | invalid_json.map(lambda v: json.dumps(v).encode())
    | deep
    | huge_user
    | bad_text
    | server_field
    | st.sampled_from(sorted(RESERVED)).map(lambda t: envelope(user="bob", type=t, payload={})),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(valid_entries() | invalid_entries, min_size=1, max_size=12))
def test_any_mix_of_entries_delivers_every_valid_one_once_and_dead_letters_the_rest(app, r, raw, make_user, entries):
    ids = {name: _user_id(app, make_user, name) for name in USERS}
    dead_before = r.xlen(channels.DEAD_LETTER_STREAM) if r.exists(channels.DEAD_LETTER_STREAM) else 0
    expected = []
    for n, (kind, body) in enumerate(entries):
        if kind == "valid":
            marker = f"m{r.incr('test:marker')}-{n}"
            body = {**body, "payload": {**body["payload"], "marker": marker}}
            expected.append((ids[body["user"]], marker))
            raw.xadd(channels.INGEST_STREAM, {"envelope": json.dumps(body).encode()})
        else:
            raw.xadd(channels.INGEST_STREAM, {"envelope": body})
    assert run_ingest(app) == len(expected)
    for user_id, marker in expected:
        assert delivered(app, r, user_id, marker) == (1, 1)
    invalid = len(entries) - len(expected)
    assert r.xlen(channels.DEAD_LETTER_STREAM) - dead_before == invalid
    assert pending(r) == 0


def _user_id(app, make_user, name: str) -> int:
    from qa_notify.models import User

    with app.app_context():
        found = db.session.scalar(select(User.id).where(User.username == name))
    return found if found is not None else make_user(name).id
