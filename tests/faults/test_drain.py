"""Many small events against the real worker: drained many rows per task, each user told once.

The answers or events here are committed while no worker runs (the workers were busy, or
down), then a real Celery worker drains them: it must deliver every one exactly once, in
the inbox and on the user's Redis stream, with a handful of tasks rather than one per
event, and redo a drain whose worker was SIGKILLed half-way without doubling anything.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import redis
from sqlalchemy import func, select

from qa_notify.events import channels
from qa_notify.events.audiences import Users
from qa_notify.events.outbox import emit
from qa_notify.events.types import CustomEvent
from qa_notify.extensions import db
from qa_notify.models import Notification, OutboxEvent, Question, QuestionFollow, User

from .conftest import record

pytestmark = pytest.mark.faults


def not_eager(stack) -> None:
    """Commits in the test process enqueue tasks for the real worker instead of running them."""
    stack.app.config["CELERY_ALWAYS_EAGER"] = False
    stack.app.extensions["celery"].conf.task_always_eager = False


def wait_all_delivered(stack, timeout: float) -> float:
    """Wait until no outbox row waits for delivery; return how long it took."""
    started = time.monotonic()
    with stack.app.app_context():
        while db.session.scalar(select(func.count()).where(OutboxEvent.delivered_at.is_(None))):
            assert time.monotonic() - started < timeout, "the worker did not deliver everything"
            time.sleep(0.2)
            db.session.expire_all()
    return time.monotonic() - started


def stream_of(r: redis.Redis, user_id: int, event: str, key) -> list:
    return [key(json.loads(f["d"])) for _, f in r.xrange(channels.user_stream(user_id)) if f["t"] == event]


def broker_messages(url: str) -> int:
    """Messages published to a Redis broker so far (kombu's Redis transport LPUSHes each task)."""
    stats = redis.Redis.from_url(url).info("commandstats")
    return int(stats.get("cmdstat_lpush", {}).get("calls", 0))


def test_answers_committed_while_no_worker_runs_arrive_once_in_a_few_tasks(broker_stack):
    """300 answers, each its own commit and its own outbox row, reach the question's asker
    and two followers exactly once; the worker takes them in a few drain tasks, not 300."""
    from qa_notify.qa.service import post_answer

    stack = broker_stack
    answers = 300
    *told, answerer = stack.users(4)
    not_eager(stack)
    before = broker_messages(stack.broker_url)
    with stack.app.test_request_context():
        question = Question(title="Busy", body="", author_id=told[0])
        db.session.add(question)
        db.session.flush()
        db.session.add_all(QuestionFollow(user_id=uid, question_id=question.id) for uid in told[1:])
        db.session.commit()
        author = db.session.get(User, answerer)
        for n in range(answers):
            post_answer(author, question, str(n))
    stack.start_worker(concurrency=2)
    seconds = wait_all_delivered(stack, timeout=120)
    tasks = broker_messages(stack.broker_url) - before
    r = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    streams = [stream_of(r, uid, "new_answers", lambda d: int(d["excerpt"])) for uid in told]
    inboxes = [stack.inbox_ticks(uid, event="new_answers", key=lambda d: int(d["excerpt"])) for uid in told]
    record("drain_burst", answers=answers, users=len(told), tasks=tasks, seconds_after_worker_start=round(seconds, 2))
    for stream, inbox in zip(streams, inboxes, strict=True):
        assert sorted(stream) == sorted(inbox) == list(range(answers)), "an answer was lost or doubled"
    assert tasks <= 12, f"{tasks} tasks for {answers} answers"


def test_answers_trickling_in_are_taken_by_the_drain_that_waits_for_them(broker_stack):
    """20 answers a tenth of a second apart, while the worker idles: the drain that took the
    first waits for the next commit to ring it instead of ending, so a handful of tasks
    deliver them all (a task each before), every follower told exactly once."""
    from qa_notify.qa.service import post_answer

    stack = broker_stack
    answers = 20
    asker, follower, answerer = stack.users(3)
    not_eager(stack)
    stack.start_worker(concurrency=2)
    with stack.app.test_request_context():
        question = Question(title="Trickle", body="", author_id=asker)
        db.session.add(question)
        db.session.flush()
        db.session.add(QuestionFollow(user_id=follower, question_id=question.id))
        db.session.commit()
        author = db.session.get(User, answerer)
        post_answer(author, question, "-1")  # the worker is up and has drained once
        wait_all_delivered(stack, timeout=120)
        before = broker_messages(stack.broker_url)
        for n in range(answers):
            post_answer(author, question, str(n))
            time.sleep(0.1)  # a commit at a time, slower than a drain of one answer takes
    wait_all_delivered(stack, timeout=120)
    tasks = broker_messages(stack.broker_url) - before
    r = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    for uid in (asker, follower):
        stream = [n for n in stream_of(r, uid, "new_answers", lambda d: int(d["excerpt"])) if n >= 0]
        inbox = [n for n in stack.inbox_ticks(uid, event="new_answers", key=lambda d: int(d["excerpt"])) if n >= 0]
        assert sorted(stream) == sorted(inbox) == list(range(answers)), "an answer was lost or doubled"
    assert tasks < answers / 2, f"{tasks} drain tasks for {answers} answers a tenth of a second apart"


def test_a_drain_killed_half_way_is_redone_without_duplicates(fault_stack):
    """One drain takes 1,000 events for 20 users each; its worker is SIGKILLed once the first
    inbox rows are written. A new worker (the same task redelivered, or the relay once the
    claim lapses after OUTBOX_CLAIM_SECONDS) finishes: every user has every event once, in
    the inbox and the stream."""
    stack = fault_stack
    events, users = 1000, 20
    stack.env.update(OUTBOX_DRAIN_ROWS=str(events), OUTBOX_CLAIM_SECONDS="5")
    user_ids = stack.users(users)
    not_eager(stack)
    with stack.app.app_context():
        for n in range(events):
            emit(CustomEvent(name="tick", data={"n": n}), Users(user_ids))
        db.session.commit()  # one commit, one drain request
    worker = stack.start_worker(concurrency=2)
    stack.wait_for_first_inbox_row(timeout=60)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    killed_at = time.monotonic()
    with stack.app.app_context():
        written = db.session.scalar(select(func.count()).select_from(Notification))
        delivered = db.session.scalar(select(func.count()).where(OutboxEvent.delivered_at.is_not(None)))
    stack.start_worker(beat=True, concurrency=2)
    wait_all_delivered(stack, timeout=90)
    r = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    streams = [stream_of(r, uid, "tick", lambda d: d["n"]) for uid in user_ids]
    with stack.app.app_context():
        rows = db.session.scalar(select(func.count()).select_from(Notification))
    received = sum(len(s) for s in streams)
    record(
        "drain_killed",
        sent=events * users,
        received=received,
        lost=sum(len(set(range(events)) - set(s)) for s in streams),
        duplicated=sum(len(s) - len(set(s)) for s in streams),
        recover_s=round(time.monotonic() - killed_at, 2),
        inbox_rows_when_killed=written,
        rows_delivered_when_killed=delivered,
    )
    assert delivered < events, "the drain had finished before it was killed"
    assert rows == events * users
    for s in streams:
        assert sorted(s) == list(range(events)), "a user lost or got twice an event"
