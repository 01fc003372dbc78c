"""Fault injection with real processes: nothing lost, nothing duplicated, nothing leaked.

Each scenario publishes a numbered series of events to a few users while it injects a
fault, then checks every user received every event exactly once over the live stream
(reconnecting like a browser) or, after a ``resync``, in the inbox.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time

import pytest
import redis

from qa_notify.events import channels

from .conftest import ReconnectingClient, login, record

pytestmark = pytest.mark.faults
USERS = 3
EVENTS = 30


def run_series(stack, user_ids, fault, *, at: int = EVENTS // 2, pace: float = 0.02, recover=None, base_url=None):
    """Publish EVENTS ticks, calling ``fault()`` at tick ``at``; return (clients, recovery seconds).

    Clients connect to ``base_url`` (nginx, say), else straight to the stack's web process.
    """
    clients = [ReconnectingClient(base_url or stack.web.url, f"user{i}", EVENTS).start() for i in range(len(user_ids))]
    for c in clients:
        assert c.opened.wait(10), "client could not connect"
    recovered = 0.0
    for n in range(EVENTS):
        if n == at:
            started = time.monotonic()
            fault()
            if recover:
                recover()
            recovered = time.monotonic() - started
        stack.publish(user_ids, n)
        time.sleep(pace)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(len(set(c.ticks)) < EVENTS and not c.resyncs for c in clients):
        stack.relay()
        time.sleep(0.5)
    for c in clients:
        c.join(10)
    return clients, recovered


def check_exactly_once(
    stack, user_ids, clients, allow_inbox_recovery: bool = False, ordered: bool = True, **inbox_filter
):
    """Every tick exactly once (and in order, if ``ordered``) per user; the inbox holds all of them."""
    lost = duplicated = 0
    for uid, client in zip(user_ids, clients, strict=True):
        ticks = client.ticks
        if ordered:
            assert ticks == sorted(ticks), f"user {uid}: out of order {ticks}"
        duplicated += len(ticks) - len(set(ticks))
        inbox = stack.inbox_ticks(uid, **inbox_filter)
        assert sorted(inbox) == list(range(EVENTS)), f"user {uid}: inbox {inbox}"
        missing = set(range(EVENTS)) - set(ticks)
        if missing and not (allow_inbox_recovery and client.resyncs):
            lost += len(missing)
    return lost, duplicated


def check_and_record(
    name, stack, user_ids, clients, recovered, allow_inbox_recovery=False, ordered=True, **extra
):  # fmt: skip
    """Check exactly-once delivery, keep the figures for docs/reliability.md; return (lost, duplicated).

    ``ordered=False`` where events committed during an outage are delivered after it (the
    stream stays ordered by id; the commit order is not kept across the outage).
    """
    lost, dup = check_exactly_once(stack, user_ids, clients, allow_inbox_recovery, ordered)
    if not ordered:
        extra["arrived_out_of_commit_order"] = sum(
            1 for c in clients for a, b in zip(c.ticks, c.ticks[1:], strict=False) if b < a
        )
    record(
        name,
        sent=EVENTS * len(user_ids),
        received=sum(len(c.ticks) for c in clients),
        lost=lost,
        duplicated=dup,
        recover_s=round(recovered, 2),
        **extra,
    )
    return lost, dup


def test_redis_killed_and_restarted_with_persistence(fault_stack):
    stack = fault_stack
    user_ids = stack.users(USERS)
    stack.start_web()
    clients, recovered = run_series(
        stack, user_ids, stack.kill_redis, recover=lambda: (time.sleep(1), stack.restart_redis())
    )
    lost, dup = check_and_record("redis_restart_persistent", stack, user_ids, clients, recovered)
    assert (lost, dup) == (0, 0)


def test_redis_wiped_sends_resync_and_inbox_stays_complete(volatile_stack):
    stack = volatile_stack
    user_ids = stack.users(USERS)
    stack.start_web()
    clients, recovered = run_series(
        stack, user_ids, stack.kill_redis, recover=lambda: (time.sleep(1), stack.restart_redis())
    )
    lost, dup = check_and_record(
        "redis_restart_wiped",
        stack,
        user_ids,
        clients,
        recovered,
        allow_inbox_recovery=True,
        resyncs=sum(c.resyncs for c in clients),
    )
    assert (lost, dup) == (0, 0)
    assert all(c.resyncs >= 1 for c in clients if len(set(c.ticks)) < EVENTS)


def test_web_process_killed_and_restarted(fault_stack):
    stack = fault_stack
    user_ids = stack.users(USERS)
    web = stack.start_web()

    def kill_and_restart():
        port = web.port
        web.kill()
        time.sleep(0.5)
        web.port = port
        web.start()

    clients, recovered = run_series(stack, user_ids, kill_and_restart)
    lost, dup = check_and_record("web_killed", stack, user_ids, clients, recovered)
    assert (lost, dup) == (0, 0)
    assert all(c.reconnects >= 1 for c in clients)


def test_database_locked_during_fan_out_retries_without_duplicates(fault_stack):
    stack = fault_stack
    user_ids = stack.users(USERS)
    stack.start_web()
    path = stack.database_url.removeprefix("sqlite:///")

    def lock_database():
        def hold():
            conn = sqlite3.connect(path, timeout=30)
            conn.execute("BEGIN EXCLUSIVE")
            time.sleep(2)
            conn.rollback()
            conn.close()

        threading.Thread(target=hold, daemon=True).start()
        time.sleep(0.2)

    clients, recovered = run_series(stack, user_ids, lock_database)
    lost, dup = check_and_record("database_locked", stack, user_ids, clients, recovered)
    assert (lost, dup) == (0, 0)


def test_worker_killed_mid_fan_out_another_finishes_it(fault_stack):
    from sqlalchemy import func, select

    from qa_notify.extensions import db
    from qa_notify.models import Notification, OutboxEvent

    stack = fault_stack
    followers = 20_000
    ids = stack.followers(followers)
    stack.app.config["CELERY_ALWAYS_EAGER"] = False
    stack.app.extensions["celery"].conf.task_always_eager = False
    worker = stack.start_worker(concurrency=2)
    time.sleep(3)
    stack.publish(ids, 0)
    stack.wait_for_first_inbox_row()
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    killed_at = time.monotonic()
    with stack.app.app_context():
        partial = db.session.scalar(select(func.count()).select_from(Notification))
    stack.start_worker(beat=True, concurrency=2)
    with stack.app.app_context():
        while True:
            db.session.expire_all()
            delivered = db.session.scalar(select(OutboxEvent.delivered_at))
            if delivered is not None:
                break
            assert time.monotonic() - killed_at < 60, "no worker finished the fan-out"
            time.sleep(0.2)
        rows = db.session.scalar(select(func.count()).select_from(Notification))
        distinct = db.session.scalar(select(func.count(func.distinct(Notification.user_id))))
    r = redis.Redis.from_url(stack.redis_url)
    pipe = r.pipeline(transaction=False)
    for uid in ids:
        pipe.xlen(channels.user_stream(uid))
    lengths = pipe.execute()
    record(
        "worker_killed",
        sent=followers,
        received=sum(lengths),
        lost=followers - sum(1 for n in lengths if n >= 1),
        duplicated=sum(n - 1 for n in lengths if n > 1),
        recover_s=round(time.monotonic() - killed_at, 2),
        inbox_rows_when_killed=partial,
    )
    assert rows == distinct == followers
    assert all(n == 1 for n in lengths), "a follower got a duplicate or nothing"


def test_broker_unreachable_at_commit_the_relay_delivers_later(broker_stack):
    """Answers posted over HTTP while the broker is down still reach every follower, once."""
    from qa_notify.extensions import db
    from qa_notify.models import Question, QuestionFollow

    stack = broker_stack
    *followers, answerer = stack.users(USERS + 1)
    with stack.app.app_context():
        question = Question(title="Outage?", body="", author_id=answerer)
        db.session.add(question)
        db.session.flush()
        db.session.add_all(QuestionFollow(user_id=uid, question_id=question.id) for uid in followers)
        db.session.commit()
        qid = question.id
    web = stack.start_web()
    stack.start_worker(beat=True)
    excerpt = {"event": "new_answers", "key": lambda data: int(data["excerpt"])}
    clients = [ReconnectingClient(web.url, f"user{i}", EVENTS, **excerpt).start() for i in range(USERS)]
    for c in clients:
        assert c.opened.wait(10)
    poster = login(web.url, f"user{USERS}")
    poster.headers["X-CSRFToken"] = poster.get("/api/csrf").json()["csrf_token"]
    statuses = []
    for n in range(EVENTS):
        if n == EVENTS // 3:
            stack.kill_broker()
        if n == 2 * EVENTS // 3:
            stack.restart_broker()
            back_at = time.monotonic()
        resp = poster.post(f"/api/questions/{qid}/answers", json={"body": str(n)}, timeout=30)
        statuses.append(resp.status_code)
        time.sleep(0.05)
    for c in clients:
        c.join(60)
    recovered = time.monotonic() - back_at
    assert statuses == [201] * EVENTS, "an answer was refused while the broker was away"
    lost, dup = check_exactly_once(stack, followers, clients, ordered=False, **excerpt)
    reordered = sum(1 for c in clients for a, b in zip(c.ticks, c.ticks[1:], strict=False) if b < a)
    record(
        "broker_unreachable",
        sent=EVENTS * USERS,
        received=sum(len(c.ticks) for c in clients),
        lost=lost,
        duplicated=dup,
        recover_s=round(recovered, 2),
        posted_while_down=EVENTS // 3,
        arrived_out_of_commit_order=reordered,
    )
    assert (lost, dup) == (0, 0)
    poster.close()


def _stalled_reader(stack, username: str):
    """A client whose ``read_some(n)`` reads until it holds ``n`` ticks, remembering the last id."""
    import json
    import socket

    client = login(stack.web.url, username)
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    sock = socket.create_connection(("127.0.0.1", stack.web.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(f"GET /notifications HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n".encode())
    state = {"ticks": [], "last_id": None, "buf": b""}
    sock.settimeout(10)
    while b"\r\n\r\n" not in state["buf"]:  # subscribed once the headers are out
        chunk = sock.recv(65536)
        assert chunk, "the server hung up before the stream opened"
        state["buf"] += chunk
    head, state["buf"] = state["buf"].split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200"), head

    def read_some(read_ticks: int) -> None:
        while len(state["ticks"]) < read_ticks:
            chunk = sock.recv(65536)
            assert chunk, f"the server hung up after {state['ticks']} while the client was still reading"
            state["buf"] += chunk
            while b"\n\n" in state["buf"]:
                block, state["buf"] = state["buf"].split(b"\n\n", 1)
                fields = dict(
                    line.split(": ", 1) for line in block.decode().split("\n") if ": " in line and line[0] != ":"
                )
                if fields.get("event") == "tick":
                    state["ticks"].append(json.loads(fields["data"])["n"])
                    state["last_id"] = fields["id"]

    return sock, state, read_some, client


def test_client_that_stops_reading_is_cut_off_and_replays_later(fault_stack):
    stack = fault_stack
    *user_ids, stalled_id = stack.users(USERS + 1)
    web = stack.start_web(SSE_BUFFER_SIZE="4")
    clients = [ReconnectingClient(web.url, f"user{i}", EVENTS).start() for i in range(USERS)]
    for c in clients:
        assert c.opened.wait(10)
    sock, state, read_some, session = _stalled_reader(stack, f"user{USERS}")
    cut_before = web.metric("qa_notify_slow_consumers_total")
    for n in range(5):
        # One at a time, read as it comes: a burst of five could overflow the 4-event buffer
        # before the stream writes any of them, and cut this client off while it still reads.
        stack.publish(user_ids + [stalled_id], n)
        read_some(n + 1)
    # from here on it reads nothing
    started = time.monotonic()
    for n in range(5, EVENTS):
        stack.publish(user_ids, n)
        stack.publish([stalled_id], n, pad=500_000)  # big events fill its socket buffers quickly
        time.sleep(0.02)
    while web.metric("qa_notify_slow_consumers_total") <= cut_before:
        assert time.monotonic() - started < 20, "the stalled client was never cut off"
        time.sleep(0.1)
    cut_after = time.monotonic() - started
    for c in clients:
        c.join(20)
    lost, dup = check_exactly_once(stack, user_ids, clients)
    assert (lost, dup) == (0, 0), "the stalled client held the others back"
    # The others have hung up and the stalled one was cut off: every stream is freed.
    deadline = time.monotonic() + 3
    while web.metric("qa_notify_open_streams") != 0:
        assert time.monotonic() < deadline, "the cut-off stream was not freed"
        time.sleep(0.1)
    sock.close()
    # It comes back (as EventSource would) with the last id it read, and gets the rest once.
    resumed = ReconnectingClient(web.url, f"user{USERS}", EVENTS - 5)
    resumed.last_id = state["last_id"]
    resumed.start().join(20)
    record(
        "slow_client",
        sent=EVENTS * (USERS + 1),
        received=sum(len(c.ticks) for c in clients) + len(state["ticks"]) + len(resumed.ticks),
        lost=lost + len(set(range(5, EVENTS)) - set(resumed.ticks)),
        duplicated=dup + len(resumed.ticks) - len(set(resumed.ticks)),
        recover_s=round(cut_after, 2),
    )
    assert state["ticks"] + resumed.ticks == list(range(EVENTS))
    session.close()
