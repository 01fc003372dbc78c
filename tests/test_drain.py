"""Draining the outbox many rows at a time: every follower told once, a poison row alone set aside.

The drain task takes every waiting outbox row (up to OUTBOX_DRAIN_ROWS) and delivers them
together; these tests write many rows in one transaction, or straight into the outbox as an
older release could have, and check what each user's inbox and stream end up holding.
"""

from __future__ import annotations

import json
import threading

import redis
from sqlalchemy import func, insert, select, update

from qa_notify.events import channels
from qa_notify.events.audiences import QuestionFollowers, Users
from qa_notify.events.outbox import emit
from qa_notify.events.types import CustomEvent
from qa_notify.extensions import db
from qa_notify.models import Notification, OutboxEvent, Question, QuestionFollow, User


def task(app, name: str):
    return app.extensions["celery"].tasks[f"workers.{name}"]


def make_users(app, n: int, prefix: str = "u") -> list[int]:
    with app.app_context():
        db.session.execute(insert(User), [{"username": f"{prefix}{i}", "password_hash": "x"} for i in range(n)])
        db.session.commit()
        return list(db.session.scalars(select(User.id).where(User.username.like(f"{prefix}%")).order_by(User.id)))


def tick(n: int) -> CustomEvent:
    return CustomEvent("tick", {"n": n})


def inbox(app, user_id: int) -> list[int]:
    """The tick numbers in a user's inbox, oldest first."""
    with app.app_context():
        rows = db.session.scalars(select(Notification).where(Notification.user_id == user_id).order_by(Notification.id))
        return [row.payload["n"] for row in rows if row.event_type == "tick"]


def stream(r: redis.Redis, user_id: int) -> list[int]:
    """The tick numbers in a user's Redis stream (what a reconnecting page replays), oldest first."""
    return [json.loads(f["d"])["n"] for _, f in r.xrange(channels.user_stream(user_id)) if f["t"] == "tick"]


def write_outbox(app, rows: list[tuple[dict, dict]]) -> list[int]:
    """Write (payload, audience) rows straight into the outbox, as an older release could have."""
    with app.app_context():
        events = [OutboxEvent(event_type="tick", payload=payload, audience=audience) for payload, audience in rows]
        db.session.add_all(events)
        db.session.commit()  # no drain is requested: only emit() does that
        return [e.id for e in events]


def test_events_committed_together_reach_each_user_once_even_when_drained_again(app, r):
    """One transaction emits events for one user, for a few, for a question's followers and
    for one larger audience than a batch: one drain delivers them all, each once, in order."""
    app.config.update(FANOUT_BATCH_SIZE=5)
    users = make_users(app, 12)
    with app.test_request_context():
        question = Question(title="Q", body="", author_id=users[0])
        db.session.add(question)
        db.session.flush()
        db.session.add_all(QuestionFollow(user_id=uid, question_id=question.id) for uid in users[1:4])
        expected: dict[int, list[int]] = {uid: [] for uid in users}
        for n in range(30):
            if n % 3 == 0:
                audience, told = Users([users[n % 12]]), [users[n % 12]]
            elif n % 3 == 1:
                audience, told = QuestionFollowers(question.id), users[:4]
            else:
                audience, told = Users(users[2:10]), users[2:10]  # 8 > the batch of 5
            emit(tick(n), audience)
            for uid in told:
                expected[uid].append(n)
        db.session.commit()
    for uid in users:
        assert sorted(inbox(app, uid)) == sorted(stream(r, uid)) == expected[uid]
    for uid in users[:2] + users[10:]:  # told of small events only: in order
        assert inbox(app, uid) == stream(r, uid) == expected[uid]
    with app.app_context():
        db.session.execute(update(OutboxEvent).values(delivered_at=None, claimed_until=None))
        db.session.commit()  # as if a drain died after pushing, before marking the rows delivered
    assert task(app, "drain_outbox").apply().get() == 30
    for uid in users:
        assert sorted(inbox(app, uid)) == sorted(stream(r, uid)) == expected[uid]


def test_a_poison_row_among_good_ones_holds_none_of_them_up(app, r):
    """Rows that can never be sent sit between good ones in one drain: the good ones are
    delivered, in order; each poison row is counted once and waits before its next try."""
    [alice] = make_users(app, 1)
    to_alice = {"kind": "users", "user_ids": [alice]}
    ids = write_outbox(
        app,
        [
            ({"n": 0}, to_alice),
            ({"n": -1, "text": "\ud800"}, to_alice),  # stored, but no Redis client can encode it
            ({"n": 1}, to_alice),
            ({"n": -2}, {"kind": "followers_of_the_moon"}),
            ({"n": 2}, to_alice),
        ],
    )
    assert task(app, "drain_outbox").apply().get() == 5
    assert stream(r, alice) == [0, 1, 2]
    with app.app_context():
        rows = {row.id: row for row in db.session.scalars(select(OutboxEvent))}
    assert [rows[i].delivered_at is not None for i in ids] == [True, False, True, False, True]
    assert rows[ids[1]].failures == 1 and "surrogate" in rows[ids[1]].last_error
    assert rows[ids[3]].failures == 1 and "followers_of_the_moon" in rows[ids[3]].last_error
    assert task(app, "drain_outbox").apply().get() == 0  # held back until their next try is due
    with app.app_context():
        assert db.session.get(OutboxEvent, ids[1]).failures == 1


def test_two_drains_at_once_never_take_the_same_row(app, r):
    app.config.update(OUTBOX_DRAIN_ROWS=25)
    # The follow-up drains a full drain asks for go to the broker (nobody runs them here):
    # each thread drains again itself until nothing is left.
    app.extensions["celery"].conf.task_always_eager = False
    users = make_users(app, 3)
    write_outbox(app, [({"n": n}, {"kind": "users", "user_ids": users}) for n in range(300)])
    drains: list[int] = []

    def drain_until_empty() -> None:
        while (result := task(app, "drain_outbox").apply()).successful() and result.result:
            drains.append(result.result)
        drains.append(-1 if result.failed() else 0)

    threads = [threading.Thread(target=drain_until_empty) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert -1 not in drains and sum(drains) == 300
    with app.app_context():
        attempts = db.session.execute(select(OutboxEvent.attempts, func.count()).group_by(OutboxEvent.attempts)).all()
        undelivered = db.session.scalar(select(func.count()).where(OutboxEvent.delivered_at.is_(None)))
    assert attempts == [(1, 300)], "a row was claimed by two drains"
    assert undelivered == 0
    for uid in users:
        assert sorted(stream(r, uid)) == sorted(inbox(app, uid)) == list(range(300))


def test_rows_of_a_drain_that_died_wait_for_it_then_for_the_relay(app, r):
    """A drain's worker dies after it claimed rows: the same task redelivered takes them
    again at once; other drains and the relay leave them alone until the claim lapses."""
    [alice] = make_users(app, 1)
    app.config.update(OUTBOX_RELAY_AGE_SECONDS=0, OUTBOX_DRAIN_ROWS=2)
    write_outbox(app, [({"n": n}, {"kind": "users", "user_ids": [alice]}) for n in range(3)])
    from qa_notify.events.drain import claim_waiting_rows

    with app.app_context():
        assert len(claim_waiting_rows("killed-task", 2, lease_seconds=60)) == 2
        db.session.commit()  # then its worker died
    assert task(app, "relay_outbox").apply().get() == 1  # only the unclaimed row is stranded
    assert stream(r, alice) == [2]
    assert task(app, "drain_outbox").apply(task_id="killed-task").get() == 2  # redelivered
    assert stream(r, alice) == [2, 0, 1]
    assert inbox(app, alice) == [2, 0, 1]
    with app.app_context():
        db.session.execute(update(OutboxEvent).values(delivered_at=None, claimed_until=None))
        db.session.commit()  # the claims lapsed with the rows undelivered: the relay redoes them
    assert task(app, "relay_outbox").apply().get() == 3
    assert stream(r, alice) == [2, 0, 1] and inbox(app, alice) == [2, 0, 1]
