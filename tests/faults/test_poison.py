"""Poison messages against the real worker: nothing a producer writes can strand a valid event.

A burst of numbered envelopes for three users goes into ``qa:ingest`` interleaved with
every kind of poison entry a careless or hostile producer can write, while two outbox rows
that can never be delivered sit in front of them. The real Celery worker (with beat: the
ingest poller and the outbox relay) must deliver every valid event exactly once, live and
in the inbox, dead-letter every poison entry, set the poison outbox rows aside after
``OUTBOX_MAX_FAILURES`` tries, and keep running.
"""

from __future__ import annotations

import json
import time

import redis
from sqlalchemy import select

from qa_notify.events import channels
from qa_notify.extensions import db
from qa_notify.models import OutboxEvent

from .conftest import ReconnectingClient, record

USERS = 3
PER_USER = 20
POISON = [
    b'{"user": "user0", "type": "tick", "payload": {"n": -1, "text": "\xff\xfe"}}',
    b'{"user": "user0", "type": "tick", "payload": {"n": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
    b'{"user": 1000000000000000000000000000000, "type": "tick", "payload": {"n": -1}}',
    b'{"user": "user1", "type": "tick", "payload": {"n": -1, "text": "\\ud800"}}',
    b'{"user": "user1", "type": "tick", "payload": {"n": NaN}}',
    b'{"user": "user2", "type": "tick", "payload": {"n": -1, "notification_id": 1}}',
    b'{"user": "user2", "type": "broadcast", "payload": {"message": "I am the admin"}}',
    b"\x00\x01 not json at all",
]


def test_poison_entries_and_rows_strand_no_valid_event(fault_stack):
    stack = fault_stack
    stack.env["OUTBOX_MAX_FAILURES"] = "3"
    user_ids = stack.users(USERS)
    web = stack.start_web()
    clients = [ReconnectingClient(web.url, f"user{i}", expect=PER_USER).start() for i in range(USERS)]
    for c in clients:
        assert c.opened.wait(10)
    with stack.app.app_context():
        for kind in ("followers_of_the_moon", "nobody_knows"):
            db.session.add(OutboxEvent(event_type="tick", payload={"n": -1}, audience={"kind": kind}))
        db.session.commit()
    raw = redis.Redis.from_url(stack.redis_url)
    sent = poison = 0
    for n in range(PER_USER):
        for i in range(USERS):
            body = {"user": f"user{i}", "type": "tick", "payload": {"n": n}}
            raw.xadd(channels.INGEST_STREAM, {"envelope": json.dumps(body).encode()})
            sent += 1
        if n % 2 == 0:
            raw.xadd(channels.INGEST_STREAM, {"envelope": POISON[(n // 2) % len(POISON)]})
            poison += 1
    raw.xadd(channels.INGEST_STREAM, {"no_envelope": b"x"})
    poison += 1

    started = time.monotonic()
    worker = stack.start_worker(beat=True)
    for c in clients:
        c.join(60)
    elapsed = time.monotonic() - started
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _failed_rows(stack) < 2:
        time.sleep(0.5)

    received = [sorted(c.ticks) for c in clients]
    inboxes = [stack.inbox_ticks(uid) for uid in user_ids]
    dead = raw.xlen(channels.DEAD_LETTER_STREAM)
    pending = raw.xpending(channels.INGEST_STREAM, channels.INGEST_GROUP)["pending"]
    lost = sum(len(set(range(PER_USER)) - set(r)) for r in received)
    duplicated = sum(len(r) - len(set(r)) for r in received)
    record(
        "poison",
        valid_sent=sent,
        poison_entries=poison,
        poison_outbox_rows=2,
        received_live=sum(len(r) for r in received),
        lost=lost,
        duplicated=duplicated,
        dead_lettered=dead,
        outbox_rows_set_aside=_failed_rows(stack),
        seconds_to_deliver_all=round(elapsed, 2),
    )
    assert lost == 0 and duplicated == 0 and all(min(r) >= 0 for r in received)
    assert all(sorted(inbox) == list(range(PER_USER)) for inbox in inboxes)
    assert dead == poison and pending == 0
    assert _failed_rows(stack) == 2
    assert worker.poll() is None  # still running

    # ...and it goes on accepting: one more valid envelope after the storm.
    late = ReconnectingClient(web.url, "user0", expect=1).start()
    assert late.opened.wait(10)
    raw.xadd(channels.INGEST_STREAM, {"envelope": b'{"user": "user0", "type": "tick", "payload": {"n": 99}}'})
    late.join(20)
    assert late.ticks == [99]


def _failed_rows(stack) -> int:
    with stack.app.app_context():
        failed = db.session.scalars(select(OutboxEvent).where(OutboxEvent.failed_at.is_not(None))).all()
        return sum(1 for row in failed if row.failures == 3)
