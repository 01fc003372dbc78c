"""The live side's logic on the in-memory broker: registry, quota, control messages, the stream body,
and events for everyone (one publish, filtered per stream, replayed by position).

No Redis, no web server: a ``Registry`` on a ``MemoryBroker``, and the SSE body generator
driven by hand. The same behaviour on Redis (single server and cluster), through HTTP, is
what ``test_stream.py`` and the fault suites check.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
import redis

from qa_notify.live.attach import read_since
from qa_notify.live.leases import LocalQuota
from qa_notify.live.memory import MemoryBroker
from qa_notify.live.registry import BROADCAST_GAP, GAP, Registry, TooManyStreams
from qa_notify.live.replay import Position, parse_position
from qa_notify.live.stream import _catch_all_frame, _event_stream, _frame
from qa_notify.live.wire import DirectWriter

ALICE, BOB = 1, 2


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker(maxlen=5)


@pytest.fixture
def registry(broker) -> Registry:
    return Registry(broker, buffer_size=3, quota=LocalQuota(limit=2))


def ids(items) -> list[str]:
    return [item.id for item in items if item is not GAP]


def test_an_event_reaches_every_stream_of_its_user_and_nobody_else(registry, broker):
    tab1, tab2 = registry.attach(ALICE, "s1"), registry.attach(ALICE, "s2")
    other = registry.attach(BOB, "s3")
    event_id = broker.push(ALICE, "new_answers", {"excerpt": "hi"})
    assert ids(tab1.wait(0)) == ids(tab2.wait(0)) == [event_id]
    assert other.wait(0) == []
    assert (registry.total(), registry.user_count()) == (3, 2)


def test_the_last_detach_stops_carrying_the_channel(registry, broker):
    tab = registry.attach(ALICE, None)
    registry.detach(tab)
    broker.push(ALICE, "new_answers", {})
    assert (registry.total(), registry.user_count()) == (0, 0)
    assert tab.wait(0) == []
    assert broker.replay(ALICE, None).last_id is not None  # kept in the history, for a replay


def test_the_quota_refuses_one_stream_too_many_and_a_closed_one_gives_its_slot_back(registry):
    first, _second = registry.attach(ALICE, None), registry.attach(ALICE, None)
    with pytest.raises(TooManyStreams):
        registry.attach(ALICE, None)
    registry.detach(first)
    assert registry.attach(ALICE, None) is not None
    assert registry.attach(BOB, None) is not None  # the limit is per user


def test_a_stream_that_stops_reading_is_cut_off_and_the_others_carry_on(registry, broker):
    slow, fast = registry.attach(ALICE, None), registry.attach(ALICE, None)
    for n in range(3):
        broker.push(ALICE, "read", {"n": n})
        assert len(fast.wait(0)) == 1  # the fast one drains as it goes
    broker.push(ALICE, "read", {"n": 3})  # the slow one's buffer (3) overflows
    assert slow.closed and slow.close_reason == "overflow" and slow.wait(0) == []
    assert registry.cut_off_count == 1 and registry.total() == 1
    broker.push(ALICE, "read", {"n": 4})
    assert len(fast.wait(0)) == 2 and not fast.closed
    assert attach_within(registry, ALICE, seconds=5)  # the lease keeper gave the cut-off one's lease back


def attach_within(registry, user_id: int, seconds: float):
    """Attach as soon as the quota allows (a lease given back by the keeper takes a tick)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return registry.attach(user_id, None)
        except TooManyStreams:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def test_a_close_request_closes_one_sessions_streams_or_all(registry, broker):
    mine, other_session = registry.attach(ALICE, "s1"), registry.attach(ALICE, "s2")
    broker.close_streams(ALICE, "logout", session_id="s1")
    assert (mine.closed, mine.close_reason, other_session.closed) == (True, "logout", False)
    broker.close_streams(ALICE, "role_changed")
    assert other_session.close_reason == "role_changed"


def test_a_malformed_control_message_is_ignored(registry, broker, caplog):
    tab = registry.attach(ALICE, None)
    broker.publish(ALICE, "\nclose\nnot json")
    assert not tab.closed and "malformed control message" in caplog.text


def test_a_channel_back_after_a_cut_resumes_its_streams_with_gap(registry, broker):
    tab = registry.attach(ALICE, None)
    broker.cut()
    broker.push(ALICE, "read", {})  # published while cut off: lost to the stream
    assert tab.wait(0) == []
    broker.reconnect()
    assert tab.wait(0) == [GAP, BROADCAST_GAP]  # the one connection carried the broadcast channel too


def test_attach_waits_for_the_confirmation_and_fails_without_it(registry, broker):
    broker.cut()
    with pytest.raises(redis.ConnectionError):
        registry.attach(ALICE, None, timeout=0.01)
    assert registry.total() == 0


def test_shutdown_closes_every_stream(registry):
    tabs = [registry.attach(ALICE, None), registry.attach(BOB, None)]
    registry.shutdown()
    assert [t.close_reason for t in tabs] == ["shutdown", "shutdown"]


# -- replay in memory keeps the Redis rules ------------------------------------------------


def test_replay_gives_the_events_after_an_id_or_gap_when_it_is_older_than_the_history(broker):
    pushed = [broker.push(ALICE, "read", {"n": n}) for n in range(7)]  # 5 kept
    assert broker.replay(ALICE, None).events == [] and broker.replay(ALICE, None).last_id == pushed[-1]
    assert [e.id for e in broker.replay(ALICE, pushed[4]).events] == pushed[5:]
    assert broker.replay(ALICE, pushed[-1]).events == []
    trimmed = broker.replay(ALICE, pushed[0])
    assert trimmed.gap and trimmed.events == [] and trimmed.last_id == pushed[-1]


# -- the SSE body ------------------------------------------------------------------------


def open_stream(registry, broker, last_id=None, frame=_frame):
    sub = registry.attach(ALICE, "s1")
    body = _event_stream(registry, sub, read_since(registry, sub, last_id), retry_ms=2000, heartbeat=0.01, frame=frame)
    return sub, body


def event_ids(chunks: list[bytes]) -> list[str]:
    """The user stream half of each frame's id (the part a user's own event moves)."""
    return [
        line[4:].split("~")[0] for chunk in chunks for line in chunk.decode().split("\n") if line.startswith("id: ")
    ]


def take(body, count: int) -> list[bytes]:
    return [next(body) for _ in range(count)]


def test_the_body_sends_the_retry_hint_the_backlog_then_live_events_and_heartbeats(registry, broker):
    for n in range(2):
        broker.push(ALICE, "read", {"n": n})  # before the last id seen: not sent again
    seen = broker.push(ALICE, "read", {"n": -1})
    missed = [broker.push(ALICE, "read", {"n": n}) for n in range(2)]
    sub, body = open_stream(registry, broker, last_id=seen)
    assert next(body) == b"retry: 2000\n\n"
    assert event_ids(take(body, 2)) == missed
    live = broker.push(ALICE, "read", {"n": 9})
    assert event_ids([next(body)]) == [live]
    assert next(body) == b": heartbeat\n\n"
    body.close()
    assert registry.total() == 0  # the body detached its subscription


def test_live_events_the_backlog_already_had_are_not_sent_twice(registry, broker):
    seen = broker.push(ALICE, "read", {"n": 0})
    sub = registry.attach(ALICE, None)
    racing = broker.push(ALICE, "read", {"n": 1})  # live, and in the backlog read after it
    body = _event_stream(registry, sub, read_since(registry, sub, seen), 2000, 0.01)
    assert next(body).startswith(b"retry:")
    assert event_ids([next(body)]) == [racing]
    assert next(body) == b": heartbeat\n\n"  # the live copy was dropped


def test_after_a_cut_the_body_re_reads_what_it_missed_in_order_once(registry, broker):
    sub, body = open_stream(registry, broker)
    next(body)
    first = broker.push(ALICE, "read", {"n": 0})
    assert event_ids([next(body)]) == [first]
    broker.cut()
    lost = [broker.push(ALICE, "read", {"n": n}) for n in (1, 2)]
    broker.reconnect()
    after = broker.push(ALICE, "read", {"n": 3})
    assert event_ids(take(body, 3)) == [*lost, after]


def test_a_cut_longer_than_the_history_sends_resync(registry, broker):
    sub, body = open_stream(registry, broker)
    next(body)
    broker.push(ALICE, "read", {})
    assert len(event_ids([next(body)])) == 1
    broker.cut()
    newest = [broker.push(ALICE, "read", {"n": n}) for n in range(6)][-1]  # more than the 5 kept
    broker.reconnect()
    chunk = next(body).decode()
    assert chunk.startswith("event: resync\n") and f"id: {newest}" in chunk
    later = broker.push(ALICE, "read", {})
    assert event_ids([next(body)]) == [later]


@pytest.mark.parametrize(
    ("reason", "last_bytes"),
    [
        ("logout", b'event: server_closed\ndata: {"reason": "logout"}\n\n'),
        ("shutdown", b": server restarting; reconnect\n\nretry: 500\n\n"),
    ],
)
def test_a_closed_stream_ends_with_what_its_reason_calls_for(registry, broker, reason, last_bytes):
    sub, body = open_stream(registry, broker)
    next(body)
    sub.close(reason)
    assert next(body) == last_bytes
    assert list(body) == [] and registry.total() == 0


def test_catch_all_sends_unknown_types_as_unnamed_messages(registry, broker):
    sub, body = open_stream(registry, broker, frame=_catch_all_frame)
    next(body)
    broker.push(ALICE, "deploy", {"text": "v2"})
    broker.push(ALICE, "read", {"ids": [1]})
    deploy, read = next(body).decode(), next(body).decode()
    assert "event:" not in deploy and json.loads(deploy.split("data: ", 1)[1]) == {
        "type": "deploy",
        "data": {"text": "v2"},
    }
    assert read.startswith("event: read\n")


# -- events for everyone: one publish, filtered per stream --------------------------------

CAROL, DAVE = 3, 4


def test_a_broadcast_reaches_each_eligible_stream_once_and_nobody_else(registry, broker):
    alice = registry.attach(ALICE, None, role="user")
    mod = registry.attach(BOB, None, role="moderator")
    muting = registry.attach(CAROL, None, role="user", muted=frozenset({"broadcast"}))
    author = registry.attach(DAVE, None, role="admin")
    everyone = broker.broadcast("broadcast", {"message": "hi"}, author_id=DAVE)
    assert ids(alice.wait(0)) == ids(mod.wait(0)) == [everyone]
    assert muting.wait(0) == [] and author.wait(0) == []
    moderators = broker.broadcast("broadcast", {"message": "mods"}, role="moderator", author_id=DAVE)
    assert (ids(mod.wait(0)), alice.wait(0), muting.wait(0), author.wait(0)) == ([moderators], [], [], [])
    deploy = broker.broadcast("deploy", {"text": "v2"})  # another type: muting broadcasts does not mute it
    assert ids(muting.wait(0)) == ids(author.wait(0)) == [deploy]


def test_a_change_of_muted_types_reaches_the_open_streams(registry, broker):
    tab = registry.attach(ALICE, None, role="user")
    broker.publish(ALICE, '\nmuted\n["broadcast"]')
    broker.broadcast("broadcast", {"message": "quiet"})
    assert tab.wait(0) == []
    broker.publish(ALICE, "\nmuted\n[]")
    loud = broker.broadcast("broadcast", {"message": "loud"})
    assert ids(tab.wait(0)) == [loud]


def test_a_stream_starts_at_the_newest_broadcast_and_carries_both_positions(registry, broker):
    before = broker.broadcast("broadcast", {"message": "before"})
    sub, body = open_stream(registry, broker)
    assert next(body).startswith(b"retry:")
    mine = broker.push(ALICE, "read", {"n": 0})
    assert all_ids([next(body)]) == [f"{mine}~{before}"]  # nothing replayed: it started now
    later = broker.broadcast("broadcast", {"message": "later"})
    assert all_ids([next(body)]) == [f"{mine}~{later}"]


def test_after_a_cut_a_new_stream_starts_at_the_newest_broadcast_not_the_last_one_heard(registry, broker):
    registry.attach(BOB, None)
    broker.cut()
    unheard = broker.broadcast("broadcast", {"message": "while cut"})
    broker.reconnect()
    assert registry.attach(ALICE, None).broadcast_from == unheard


def test_a_reconnect_with_a_position_gets_the_missed_broadcast_once_and_filtered(registry, broker):
    seen = broker.broadcast("broadcast", {"message": "seen"})
    mine = broker.push(ALICE, "read", {"n": 0})
    missed = broker.broadcast("broadcast", {"message": "missed"})
    broker.broadcast("broadcast", {"message": "by alice"}, author_id=ALICE)  # hers: never told
    broker.broadcast("broadcast", {"message": "mods"}, role="moderator")  # not her role
    also = broker.push(ALICE, "read", {"n": 1})
    sub = registry.attach(ALICE, "s1", role="user")
    racing = broker.broadcast("broadcast", {"message": "racing"})  # live, and in the backlog read after it
    body = _event_stream(registry, sub, read_since(registry, sub, f"{mine}~{seen}"), 2000, 0.01)
    next(body)
    assert all_ids(take(body, 3)) == [f"{mine}~{missed}", f"{also}~{missed}", f"{also}~{racing}"]
    assert next(body) == b": heartbeat\n\n"  # the live copy of "racing" was dropped


def test_an_old_plain_id_still_replays_the_users_events_and_starts_broadcasts_now(registry, broker):
    seen = broker.push(ALICE, "read", {"n": 0})
    broker.broadcast("broadcast", {"message": "missed, not replayed"})
    missed = broker.push(ALICE, "read", {"n": 1})
    sub, body = open_stream(registry, broker, last_id=seen)
    next(body)
    [frame] = take(body, 1)
    assert b"missed, not replayed" not in frame and event_ids([frame]) == [missed]
    live = broker.broadcast("broadcast", {"message": "live"})
    assert all_ids([next(body)]) == [f"{missed}~{live}"]


def test_after_a_cut_the_body_re_reads_the_broadcasts_it_missed_once(registry, broker):
    sub, body = open_stream(registry, broker)
    next(body)
    first = broker.broadcast("broadcast", {"message": "first"})
    assert all_ids([next(body)]) == [f"~{first}"]  # nothing of her own yet: the user half is empty
    broker.cut()
    lost = [broker.broadcast("broadcast", {"message": f"lost {n}"}) for n in range(2)]
    broker.broadcast("broadcast", {"message": "muted"}, author_id=ALICE)
    broker.reconnect()
    after = broker.broadcast("broadcast", {"message": "after"})
    assert all_ids(take(body, 3)) == [f"~{b}" for b in (*lost, after)]


def test_a_broadcast_cut_longer_than_the_history_sends_resync(registry, broker):
    sub, body = open_stream(registry, broker)
    next(body)
    broker.broadcast("broadcast", {})
    next(body)
    broker.cut()
    newest = [broker.broadcast("broadcast", {"n": n}) for n in range(6)][-1]  # more than the 5 kept
    broker.reconnect()
    chunk = next(body).decode()
    assert chunk.startswith("event: resync\n") and f"id: ~{newest}" in chunk


@pytest.mark.parametrize("position", ["1-0~2-0", "~2-0", "1-0", "0-0~0-0"])
def test_positions_parse(position):
    user, broadcast = parse_position(position)
    assert (user or "") + ("~" + broadcast if broadcast else "") == position


@pytest.mark.parametrize("junk", ["~", "1-0~", "1-0~2-0~3-0", "~x", "1-0~2", "1-0 ~2-0", "1-0~" + "9" * 30 + "-0"])
def test_bad_positions_are_refused(junk):
    with pytest.raises(ValueError):
        parse_position(junk)


def all_ids(chunks: list[bytes]) -> list[str]:
    return [line[4:] for chunk in chunks for line in chunk.decode().split("\n") if line.startswith("id: ")]


def _parked_on_socket(registry: Registry, user_id: int):
    """A subscription whose stream is parked and written to directly on one end of a socket pair."""
    ours, theirs = socket.socketpair()
    sub = registry.attach(user_id, None)
    sub.writer = DirectWriter(ours, lambda data: data, Position("0-0", "0-0"), _frame)
    sub.parked = True
    return sub, ours, theirs


def test_the_heartbeat_ticker_beats_each_parked_stream_once_a_period_and_skips_busy_ones(registry):
    registry.heartbeats.slices = 1  # every tick is every stream's
    idle, _, idle_peer = _parked_on_socket(registry, ALICE)
    busy, _, busy_peer = _parked_on_socket(registry, BOB)
    busy.queue(GAP)  # its stream has something to do: it is writing anyway
    assert registry.heartbeats.beat(0) == 1
    idle_peer.setblocking(False)
    busy_peer.setblocking(False)
    assert idle_peer.recv(100) == b": heartbeat\n\n"
    with pytest.raises(BlockingIOError):
        busy_peer.recv(100)


def test_a_beat_to_a_client_that_stopped_reading_is_left_out_or_finished_whole_by_its_stream(registry):
    registry.heartbeats.slices = 1
    sub, ours, peer = _parked_on_socket(registry, ALICE)
    ours.setblocking(False)
    while True:  # fill the kernel's buffers: the client reads nothing
        try:
            ours.send(b"x" * 1024)
        except BlockingIOError:
            break
    registry.heartbeats.beat(0)
    assert sub.wait(0) == [] and not sub.closed  # no room: no beat, nothing half-sent
    sub.parked = True  # parked again; and now the client hangs up
    peer.close()
    registry.heartbeats.beat(0)
    assert sub.closed and sub.close_reason == "client_gone"
