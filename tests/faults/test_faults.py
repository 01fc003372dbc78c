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

from .conftest import ReconnectingClient, record

pytestmark = pytest.mark.faults
USERS = 3
EVENTS = 30


def run_series(stack, user_ids, fault, *, at: int = EVENTS // 2, pace: float = 0.02, recover=None):
    """Publish EVENTS ticks, calling ``fault()`` at tick ``at``; return (clients, recovery seconds)."""
    clients = [ReconnectingClient(stack.web.url, f"user{i}", EVENTS).start() for i in range(len(user_ids))]
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


def check_exactly_once(stack, user_ids, clients, allow_inbox_recovery: bool = False):
    """Every tick exactly once and in order per user; the inbox holds all of them."""
    lost = duplicated = 0
    for uid, client in zip(user_ids, clients, strict=True):
        ticks = client.ticks
        assert ticks == sorted(ticks), f"user {uid}: out of order {ticks}"
        duplicated += len(ticks) - len(set(ticks))
        inbox = stack.inbox_ticks(uid)
        assert sorted(inbox) == list(range(EVENTS)), f"user {uid}: inbox {inbox}"
        missing = set(range(EVENTS)) - set(ticks)
        if missing and not (allow_inbox_recovery and client.resyncs):
            lost += len(missing)
    return lost, duplicated


def check_and_record(name, stack, user_ids, clients, recovered, allow_inbox_recovery=False, **extra):
    """Check exactly-once delivery, keep the figures for docs/reliability.md; return (lost, duplicated)."""
    lost, dup = check_exactly_once(stack, user_ids, clients, allow_inbox_recovery)
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
    from sqlalchemy import func, insert, select

    from qa_notify.extensions import db
    from qa_notify.models import Notification, OutboxEvent, User

    stack = fault_stack
    followers = 20_000
    with stack.app.app_context():
        db.session.execute(
            insert(User), [{"username": f"f{i}", "password_hash": "x", "role": "user"} for i in range(followers)]
        )
        db.session.commit()
        ids = list(db.session.scalars(select(User.id)))
    stack.app.config["CELERY_ALWAYS_EAGER"] = False
    stack.app.extensions["celery"].conf.task_always_eager = False
    worker = stack.start_worker(concurrency=2)
    time.sleep(3)
    stack.publish(ids, 0)
    started = time.monotonic()
    with stack.app.app_context():
        while True:
            done = db.session.scalar(select(func.count()).select_from(Notification))
            if done > 0:
                break
            assert time.monotonic() - started < 30, "the fan-out never started"
            time.sleep(0.01)
            db.session.expire_all()
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
        pipe.xlen(f"qa:u:{uid}:events")
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
