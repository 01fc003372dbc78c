"""The /notifications SSE stream, served by a real gevent web process."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from httpx_sse import connect_sse

from qa_notify.events import channels

from .live import WebProcess, collect_events, read_events


@pytest.fixture(scope="module")
def web(redis_url, database_url):
    proc = WebProcess(
        database_url,
        redis_url,
        SSE_HEARTBEAT_SECONDS="0.5",
        SSE_MAX_STREAMS_PER_USER="3",
        SSE_BUFFER_SIZE="20",
    ).start()
    yield proc
    proc.stop()


def in_background(fn, *args, **kwargs):
    """Run a stream reader in a thread; return a joiner whose ``opened`` event is set once
    the server answered (and so had subscribed the stream)."""
    result = {}
    opened = threading.Event()

    def run():
        try:
            result["value"] = fn(*args, opened=opened, **kwargs)
        except BaseException as exc:  # surfaced by the joiner
            result["error"] = exc
            opened.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def join(timeout: float = 15):
        thread.join(timeout)
        assert not thread.is_alive(), "stream reader did not finish"
        if "error" in result:
            raise result["error"]
        return result["value"]

    join.opened = opened
    return join


def wait_open(*joins, timeout: float = 10.0) -> None:
    """Wait until every background stream is open on the server."""
    for join in joins:
        assert join.opened.wait(timeout), "stream did not open"


def ask_and_answer(login_as, asker, answers: int, answerer_name: str = "bob"):
    qid = asker.post("/api/questions", {"title": "Streams?"}).get_json()["id"]
    answerer = login_as(answerer_name)
    for i in range(answers):
        assert answerer.post(f"/api/questions/{qid}/answers", {"body": f"answer {i}"}).status_code == 201
    return qid


def test_anonymous_gets_401_json(web):
    resp = web.client().get("/notifications")
    assert resp.status_code == 401
    assert resp.json() == {"error": "login required", "request_id": resp.headers["X-Request-ID"]}


def test_stream_headers_and_retry_hint(web, login_as):
    login_as("ann")
    with web.client("ann").stream("GET", "/notifications") as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["cache-control"] == "no-cache"
        assert resp.headers["x-accel-buffering"] == "no"
        first = next(resp.iter_lines())
        assert 2000 <= int(first.removeprefix("retry: ")) <= 5000  # 2 s plus up to 3 s of jitter


def test_answer_reaches_the_asker_live(web, login_as):
    asker = login_as("ann")
    client = web.client("ann")
    join = in_background(read_events, client, 1)
    wait_open(join)
    qid = ask_and_answer(login_as, asker, 1)
    [event] = join()
    assert event.event == "new_answers"
    data = json.loads(event.data)
    assert data["question_id"] == qid and data["author"] == "bob" and data["excerpt"] == "answer 0"
    assert event.id and data["notification_id"] > 0


def test_users_only_see_their_own_events_whatever_the_query(web, login_as, r):
    asker = login_as("ann")
    login_as("eve")
    eve = web.client("eve")
    ann_id = asker.get("/api/me").get_json()["id"]
    ann_tab = in_background(read_events, web.client("ann"), 2)
    params = {"user_id": ann_id, "user": "ann", "channel": channels.user_channel(ann_id)}
    eve_tab = in_background(collect_events, eve, 2.0, params=params)
    wait_open(ann_tab, eve_tab)
    ask_and_answer(login_as, asker, 2)
    assert [e.event for e in ann_tab()] == ["new_answers", "new_answers"]
    assert [e.event for e in eve_tab()] == []
    assert r.xlen(channels.user_stream(ann_id)) == 2


def test_heartbeat_comments_flow(web, login_as):
    login_as("ann")
    with web.client("ann").stream("GET", "/notifications") as resp:
        lines = []
        for line in resp.iter_lines():
            lines.append(line)
            if line == ": heartbeat":
                break
    assert ": heartbeat" in lines


def test_replay_after_disconnect_sends_exactly_the_missed_events(web, login_as):
    asker = login_as("ann")
    client = web.client("ann")
    join = in_background(read_events, client, 2)
    wait_open(join)
    qid = ask_and_answer(login_as, asker, 2)
    seen = join()
    answerer = login_as("carl")
    for i in range(3):
        answerer.post(f"/api/questions/{qid}/answers", {"body": f"missed {i}"})
    replayed = read_events(client, 3, headers={"Last-Event-ID": seen[-1].id})
    assert [json.loads(e.data)["excerpt"] for e in replayed] == ["missed 0", "missed 1", "missed 2"]
    # The first connection of a page can pass the id as a query parameter instead.
    again = read_events(client, 1, params={"last_event_id": replayed[0].id})
    assert json.loads(again[0].data)["excerpt"] == "missed 1"


def test_resync_when_last_id_is_older_than_the_kept_history(web, login_as, r):
    asker = login_as("ann")
    ask_and_answer(login_as, asker, 3)
    ann_id = asker.get("/api/me").get_json()["id"]
    oldest = r.xrange(channels.user_stream(ann_id))[0][0]
    r.xtrim(channels.user_stream(ann_id), maxlen=1, approximate=False)
    [event] = read_events(web.client("ann"), 1, headers={"Last-Event-ID": oldest})
    assert event.event == "resync"
    assert event.id.split("~")[0] == r.xrange(channels.user_stream(ann_id))[-1][0]  # the position's user half


@pytest.mark.parametrize(
    "where",
    [
        {"params": {"last_event_id": "1-0\nevent: admin\n\ndata: forged"}},
        {"headers": {"Last-Event-ID": "1-0 event: admin"}},
        {"headers": {"Last-Event-ID": "9" * 60}},
    ],
)
def test_malformed_last_event_id_is_ignored_not_echoed(web, login_as, where):
    asker = login_as("ann")
    client = web.client("ann")
    join = in_background(read_events, client, 1, **where)
    wait_open(join)
    ask_and_answer(login_as, asker, 1)
    [event] = join()
    assert event.event == "new_answers"


@pytest.fixture
def roomy_web(redis_url, database_url):
    """A web process whose per-user cap does not get in the way of rapid reconnects."""
    proc = WebProcess(database_url, redis_url, SSE_HEARTBEAT_SECONDS="0.5", SSE_MAX_STREAMS_PER_USER="100").start()
    yield proc
    proc.stop()


def test_no_duplicate_or_gap_at_the_replay_live_switch(roomy_web, login_as, app, r):
    from qa_notify.events import bus
    from qa_notify.events.types import ReadEvent

    web = roomy_web
    login_as("ann")
    ann_id = web.client("ann").get("/api/me").json()["id"]
    total = 300
    stop = threading.Event()

    def publish():
        with app.app_context():
            rc = bus.redis_client()
            for i in range(total):
                bus.push_live(rc, ann_id, ReadEvent(ids=[i], all=False, unread_count=i))
                time.sleep(0.002)
        stop.set()

    client = web.client("ann")
    received: list[int] = []
    last_id = None
    publisher = threading.Thread(target=publish)
    # Reconnect every few events while the publisher runs: each switch-over is a chance to
    # lose or repeat an event.
    while len(received) < total:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        with connect_sse(client, "GET", "/notifications", headers=headers, timeout=10) as source:
            assert source.response.status_code == 200, source.response.read()
            for n, sse in enumerate(source.iter_sse()):
                if sse.event != "read":
                    # The opening retry hint: this stream is subscribed, publishing may start.
                    if not publisher.is_alive() and not stop.is_set():
                        publisher.start()
                    continue
                received.append(json.loads(sse.data)["ids"][0])
                last_id = sse.id
                if n >= 7 or len(received) >= total:
                    break
    publisher.join()
    assert received == list(range(total))


def test_too_many_streams_get_429(web, login_as):
    login_as("ann")
    clients = [web.client("ann") for _ in range(4)]
    streams = [c.stream("GET", "/notifications") for c in clients[:3]]
    opened = [s.__enter__() for s in streams]
    try:
        assert all(resp.status_code == 200 for resp in opened)
        extra = clients[3].get("/notifications")
        assert extra.status_code == 429
        assert "too many" in extra.json()["error"]
    finally:
        for s in streams:
            s.__exit__(None, None, None)


def test_logout_closes_the_stream_with_server_closed(web, login_as):
    login_as("ann")
    client = web.client("ann")
    join = in_background(read_events, client, 1)
    wait_open(join)
    other_tab_same_browser = client  # same cookie jar: the same session
    resp = other_tab_same_browser.post("/api/logout")
    assert resp.status_code == 200
    [event] = join()
    assert event.event == "server_closed"
    assert json.loads(event.data) == {"reason": "logout"}


def test_slow_consumer_is_cut_off_without_delaying_others(web, login_as, app):
    from qa_notify.events import bus
    from qa_notify.events.types import ReadEvent

    login_as("slow"), login_as("fast")
    slow_client, fast_client = web.client("slow"), web.client("fast")
    slow_id, fast_id = (
        slow_client.get("/api/me").json()["id"],
        fast_client.get("/api/me").json()["id"],
    )
    cookie = "; ".join(f"{k}={v}" for k, v in slow_client.cookies.items())
    # A client that sends its request and never reads a byte of the answer.
    sock = socket.create_connection(("127.0.0.1", web.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(f"GET /notifications HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n".encode())
    sock.settimeout(5)
    assert sock.recv(12) == b"HTTP/1.1 200"  # the stream is open; from now on it reads nothing
    cut_before = web.metric("qa_notify_slow_consumers_total")
    join = in_background(read_events, fast_client, 200, timeout=20)
    wait_open(join)
    big = "x" * 64_000  # large frames fill the slow client's socket buffers quickly
    started = time.monotonic()
    with app.app_context():
        rc = bus.redis_client()
        for i in range(200):
            bus.push_live(rc, fast_id, ReadEvent(ids=[i], all=False, unread_count=i))
            rc.spublish(channels.user_channel(slow_id), f"{i + 1}-0\nread\n" + json.dumps({"pad": big}))
    fast_events = join()
    elapsed = time.monotonic() - started
    assert [json.loads(e.data)["ids"][0] for e in fast_events] == list(range(200))
    assert elapsed < 15
    deadline = time.monotonic() + 5
    while web.metric("qa_notify_slow_consumers_total") <= cut_before:
        assert time.monotonic() < deadline, "the slow client was never cut off"
        time.sleep(0.1)
    sock.close()


class ChunkedEvents:
    """Reads a stream's chunked SSE body off a raw socket, checking every chunk's framing."""

    def __init__(self, sock) -> None:
        self.sock, self.raw, self.body = sock, b"", b""

    def until(self, last_id: str, timeout: float = 30) -> list[tuple[str, int]]:
        """Read until the event ``last_id`` (of the user's stream); return the events read
        since the last call, each as (user stream id, data length)."""
        deadline = time.monotonic() + timeout
        while f"id: {last_id}~".encode() not in self.body:
            assert time.monotonic() < deadline, "the stream stopped before the last event"
            self.raw += self.sock.recv(65536)
            while (end := self.raw.find(b"\r\n")) >= 0 and len(self.raw) >= end + 4 + int(self.raw[:end], 16):
                size = int(self.raw[:end], 16)
                assert self.raw[end + 2 + size : end + 4 + size] == b"\r\n", "a chunk was broken on the wire"
                self.body += self.raw[end + 2 : end + 2 + size]
                self.raw = self.raw[end + 4 + size :]
        done, _, self.body = self.body.rpartition(b"\n\n")
        events = []
        for block in done.decode().split("\n\n"):
            fields = dict(line.split(": ", 1) for line in block.split("\n") if line.startswith(("id: ", "data: ")))
            if "id" in fields:
                events.append((fields["id"].split("~")[0], len(fields["data"])))
        return events


def test_frames_larger_than_the_socket_takes_at_once_arrive_whole_and_in_order(web, login_as, app):
    from qa_notify.events import bus

    login_as("reader")
    client = web.client("reader")
    uid = client.get("/api/me").json()["id"]
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    sock = socket.create_connection(("127.0.0.1", web.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a slow link: little fits at once
    sock.sendall(f"GET /notifications HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n".encode())
    sock.settimeout(10)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 200")
    with app.app_context():
        rc = bus.redis_client()
        rc.spublish(channels.user_channel(uid), "1-0\nread\n" + json.dumps({"n": 1}))
        events = ChunkedEvents(sock)
        assert events.until("1-0") == [("1-0", len(json.dumps({"n": 1})))]
        # The stream waits again: what follows is written while it waits, most of it by its
        # greenlet after the socket took what it could; the client reads nothing meanwhile.
        sizes = [300_000, 10, 200_000, 10]
        for i, size in enumerate(sizes, start=2):
            rc.spublish(channels.user_channel(uid), f"{i}-0\nread\n" + json.dumps({"pad": "x" * size}))
    got = events.until(f"{len(sizes) + 1}-0")
    sock.close()
    assert got == [(f"{i}-0", len(json.dumps({"pad": "x" * n}))) for i, n in enumerate(sizes, start=2)]


def test_long_poll_returns_events_after_an_id(web, login_as):
    asker = login_as("ann")
    client = web.client("ann")
    first = client.get("/api/notifications/poll", params={"timeout": 0}).json()
    assert first["events"] == [] and first["resync"] is False
    ask_and_answer(login_as, asker, 2)
    got = client.get("/api/notifications/poll", params={"after": first["last_id"] or "0-0", "timeout": 5}).json()
    if first["last_id"] is None:
        assert got["resync"] is True  # no history yet -> refetch the inbox
    else:
        assert [e["type"] for e in got["events"]] == ["new_answers", "new_answers"]
    assert client.get("/api/notifications/poll", params={"after": "nonsense"}).status_code == 400


def test_sigterm_ends_streams_promptly_so_browsers_reconnect_elsewhere(redis_url, database_url, login_as):
    login_as("ann")
    proc = WebProcess(database_url, redis_url).start()
    try:
        client = proc.client("ann")
        join = in_background(collect_events, client, 20.0)
        wait_open(join)
        started = time.monotonic()
        proc.process.terminate()
        events = join(timeout=15)
        closed_after = time.monotonic() - started
        proc.process.wait(10)
        # Without closing streams on shutdown the server would wait its 5 s stop timeout.
        assert closed_after < 2.5
        assert proc.process.returncode is not None
        # A shutdown is not a sign-out: the page must reconnect, so no server_closed.
        assert [e.event for e in events] == []
    finally:
        proc.kill()


def test_stream_cap_holds_across_web_processes(web, redis_url, database_url, login_as):
    login_as("ann")
    other = WebProcess(database_url, redis_url, SSE_MAX_STREAMS_PER_USER="3").start()
    try:
        on_first = [web.client("ann").stream("GET", "/notifications") for _ in range(2)]
        on_second = other.client("ann").stream("GET", "/notifications")
        opened = [s.__enter__() for s in [*on_first, on_second]]
        try:
            assert [resp.status_code for resp in opened] == [200, 200, 200]
            assert other.client("ann").get("/notifications").status_code == 429
        finally:
            for s in [*on_first, on_second]:
                s.__exit__(None, None, None)
    finally:
        other.stop()


def test_password_change_closes_every_stream_and_old_sessions(web, login_as):
    login_as("ann")
    laptop, phone = web.client("ann"), web.client("ann")
    laptop_stream = in_background(read_events, laptop, 1)
    phone_stream = in_background(read_events, phone, 1)
    wait_open(laptop_stream, phone_stream)
    resp = laptop.put("/api/me/password", json={"current_password": "correct-horse-9", "new_password": "new-horse-10"})
    assert resp.status_code == 200
    for stream in (laptop_stream, phone_stream):
        [event] = stream()
        assert event.event == "server_closed"
        assert json.loads(event.data) == {"reason": "password_changed"}
    assert phone.get("/api/me").status_code == 401  # the other device is signed out
    assert laptop.get("/api/me").status_code == 200  # the one that changed it is not


def test_role_change_closes_the_users_streams(web, login_as):
    admin = login_as("root", "admin")
    login_as("ann")
    ann = web.client("ann")
    ann_id = ann.get("/api/me").json()["id"]
    stream = in_background(read_events, ann, 1)
    wait_open(stream)
    assert admin.put(f"/api/users/{ann_id}/role", {"role": "moderator"}).status_code == 200
    [event] = stream()
    assert (event.event, json.loads(event.data)) == ("server_closed", {"reason": "role_changed"})
    assert ann.get("/api/me").status_code == 401  # signed in again, the new role applies


# -- events for everyone: written once, filtered by each web process ---------------------


def broadcast_ids(r) -> list[str]:
    return [eid for eid, _ in r.xrange(channels.broadcast_stream())]


def messages(events) -> list[str]:
    return [json.loads(e.data)["message"] for e in events if e.event == "broadcast"]


def told(events) -> list[tuple[str, str]]:
    """Each event as (id, broadcast message); any other event fails the test."""
    assert all(e.event == "broadcast" for e in events), [e.event for e in events]
    return [(e.id, json.loads(e.data)["message"]) for e in events]


def test_one_broadcast_reaches_every_eligible_stream_once(web, login_as, r):
    admin = login_as("root", "admin")
    users = {name: login_as(name, role) for name, role in [("ann", "user"), ("ben", "user"), ("mod", "moderator")]}
    quiet, _ = login_as("quiet"), login_as("late")
    assert quiet.put("/api/preferences", {"muted": ["broadcast"]}).status_code == 200  # before its stream opens
    expected = {"ann": 1, "ben": 1, "mod": 2, "quiet": 0, "root": 0}  # broadcasts each stream should get
    arrived = threading.Semaphore(0)

    def reader(name: str):
        # Reads until its user's `read` event (sent once every stream that should have the
        # broadcasts has them: anything more, a duplicate, would have come before it).
        counted = lambda sse: sse.event == "broadcast" and arrived.release()  # noqa: E731
        sentinel = lambda sse: sse.event == "read"  # noqa: E731
        return in_background(collect_events, web.client(name), 30, on_event=counted, until=sentinel)

    readers = [(name, reader(name)) for name in [*users, "ann", "quiet", "root"]]
    late, got_read, late_reads = web.client("late"), threading.Event(), []

    def second_read(sse) -> bool:
        late_reads.append(sse.event)
        return late_reads.count("read") == 2

    late_reader = in_background(
        collect_events, late, 30, on_event=lambda sse: sse.event == "read" and got_read.set(), until=second_read
    )
    wait_open(*(join for _, join in readers), late_reader)
    # Muted while its stream is open: the stream is told on the user's channel. The `read` event
    # that follows on the same channel shows the process has the news before the broadcast.
    assert late.put("/api/preferences", json={"muted": ["broadcast"]}).status_code == 200
    assert late.post("/api/notifications/read", json={"all": True}).status_code == 200
    assert got_read.wait(15)
    assert admin.post("/api/admin/broadcast", {"message": "Hello all"}).status_code == 202
    assert admin.post("/api/admin/broadcast", {"message": "Mods only", "role": "moderator"}).status_code == 202
    for _ in range(sum(expected[name] for name, _ in readers)):
        assert arrived.acquire(timeout=30), "a broadcast did not reach a stream it is for"
    for name in [*expected, "late"]:  # the process has handed out both broadcasts: end every reader
        assert web.client(name).post("/api/notifications/read", json={"all": True}).status_code == 200
    everyone, mods = broadcast_ids(r)  # written once each, for every stream of every process
    got: dict[str, list] = {}
    for name, join in readers:
        got.setdefault(name, []).append(told([e for e in join() if e.event != "read"]))
    assert got["ann"] == [[(f"~{everyone}", "Hello all")]] * 2  # both of her tabs, once each
    assert got["ben"] == [[(f"~{everyone}", "Hello all")]]
    assert got["mod"] == [[(f"~{everyone}", "Hello all"), (f"~{mods}", "Mods only")]]
    assert got["quiet"] == got["root"] == [[]]  # muted; its author
    assert [e.event for e in late_reader()] == ["read", "read"]  # muted while open: no broadcast
    for name in [*users, "quiet", "root"]:
        uid = web.client(name).get("/api/me").json()["id"]
        assert r.xlen(channels.user_stream(uid)) == 1  # the `read` above only: no broadcast per user


def test_a_reconnect_replays_a_missed_broadcast_once_and_a_plain_id_still_works(web, login_as, r):
    admin, asker = login_as("root", "admin"), login_as("ann")
    client = web.client("ann")
    join = in_background(read_events, client, 2)
    wait_open(join)
    qid = ask_and_answer(login_as, asker, 1)
    assert admin.post("/api/admin/broadcast", {"message": "seen live"}).status_code == 202
    answer, live = join()
    mine = answer.id.split("~")[0]
    assert mine == r.xrange(channels.user_stream(asker.user_id))[-1][0]
    assert (live.event, live.id) == ("broadcast", f"{mine}~{broadcast_ids(r)[-1]}")
    admin.post("/api/admin/broadcast", {"message": "missed"})
    [missed] = read_events(client, 1, headers={"Last-Event-ID": live.id})
    assert messages([missed]) == ["missed"] and missed.id == f"{mine}~{broadcast_ids(r)[-1]}"
    assert collect_events(client, 1.0, headers={"Last-Event-ID": missed.id}) == []  # once, never again
    # The old plain form (a user stream id alone): her own events replay, broadcasts start now.
    assert login_as("carl").post(f"/api/questions/{qid}/answers", {"body": "later"}).status_code == 201
    [later] = read_events(client, 1, headers={"Last-Event-ID": mine})
    assert later.event == "new_answers" and json.loads(later.data)["excerpt"] == "later"


def test_long_poll_carries_positions_and_replays_broadcasts(web, login_as, r):
    admin = login_as("root", "admin")
    login_as("ann")
    client = web.client("ann")
    first = client.get("/api/notifications/poll", params={"timeout": 0}).json()
    assert first["events"] == [] and "~" in first["last_id"]
    admin.post("/api/admin/broadcast", {"message": "by poll"})
    got = client.get("/api/notifications/poll", params={"after": first["last_id"], "timeout": 5}).json()
    assert [(e["type"], e["data"]["message"]) for e in got["events"]] == [("broadcast", "by poll")]
    assert got["last_id"] == got["events"][-1]["id"] and got["last_id"].endswith("~" + broadcast_ids(r)[-1])
    again = client.get("/api/notifications/poll", params={"after": got["last_id"], "timeout": 0}).json()
    assert again["events"] == [] and again["last_id"] == got["last_id"]
