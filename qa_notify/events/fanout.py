"""Turn outbox rows into inbox rows and live pushes for every recipient, exactly once.

Called by the Celery tasks in ``workers`` for one row, and by ``drain`` for many small rows
at once; an event for everyone goes to ``broadcast`` (published once, not per user). Each batch first inserts inbox rows (a unique (user, outbox) constraint makes a
retried batch insert nothing new), commits, then pushes the batch to Redis, where a
per-event marker (a set per partition) skips what an earlier try pushed.
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import BindParameter, Select, bindparam, or_, select

from ..extensions import db
from ..jobs import jobs
from ..metrics import instruments
from ..models import Notification, OutboxEvent, insert_inbox_rows, utcnow
from . import bus, channels
from .audiences import Everyone, parse_audience
from .broadcast import deliver_to_everyone
from .recipients import dense_range, recipient_batches, still_recipients

log = logging.getLogger(__name__)


def store_and_push(deliveries: list[tuple[Any, list[int]]]) -> int:
    """Store each ``(event, user ids)`` pair's inbox rows in one insert and one commit, then
    push them all in one pipeline per Redis master; return how many were pushed live now.

    ``event`` is an outbox row, or any row with its ``id``, ``event_type``, ``payload``
    and ``created_at``.
    """
    pairs = [(uid, event.id) for event, uids in deliveries for uid in uids]
    if not pairs:
        return 0
    insert_inbox_rows(pairs, utcnow())
    recipients = _stored(pairs)
    db.session.commit()
    events = [(event.id, event.event_type, event.payload, recipients.get(event.id, [])) for event, _ in deliveries]
    pushed = bus.push_events(bus.redis_client(), events)
    for (event, _), count in zip(deliveries, pushed, strict=True):
        instruments.pushed(event.created_at, count)
    hand_to_web_push([(event.id, [uid for uid, _ in recipients.get(event.id, [])]) for event, _ in deliveries])
    return sum(pushed)


def _stored(pairs: list[tuple[int, int]]) -> dict[int, list[tuple[int, int]]]:
    """Return the inbox rows of these ``(user id, outbox id)`` pairs, as ``(user id,
    notification id)`` by outbox id, in user order: one query on the Core connection (no
    ORM rows), the users read as their id range when they lie close together (a batch's)."""
    user_ids = sorted({uid for uid, _ in pairs})
    bounds = dense_range(user_ids)
    params: dict[str, Any] = {"outbox_ids": sorted({oid for _, oid in pairs})}
    params.update({"lo": bounds[0], "hi": bounds[1]} if bounds else {"user_ids": user_ids})
    wanted = set(pairs)
    recipients: dict[int, list[tuple[int, int]]] = {}
    for outbox_id, user_id, notification_id in db.session.connection().execute(_stored_query(bool(bounds)), params):
        if (user_id, outbox_id) in wanted:
            recipients.setdefault(outbox_id, []).append((user_id, notification_id))
    return recipients


@functools.cache
def _stored_query(dense: bool) -> Select:
    """``_stored``'s query, built once (building a statement costs more than running it)."""
    outbox_ids: BindParameter[int] = bindparam("outbox_ids", expanding=True)
    if dense:
        # A range of the (user_id, outbox_id) index. "+ 0" keeps SQLite from taking the
        # outbox_id index instead, which reads every row of the event stored so far: each
        # batch of a million-follower fan-out read all the batches before it.
        where = [
            Notification.user_id.between(bindparam("lo"), bindparam("hi")),
            (Notification.outbox_id + 0).in_(outbox_ids),
        ]
    else:
        where = [
            Notification.user_id.in_(bindparam("user_ids", expanding=True)),
            Notification.outbox_id.in_(outbox_ids),
        ]
    return (
        select(Notification.outbox_id, Notification.user_id, Notification.id)
        .where(*where)
        .order_by(Notification.user_id)
    )


def hand_to_web_push(deliveries: list[tuple[int, list[int]]]) -> None:
    """Queue Web Push for these stored ``(outbox id, user ids)`` (qa_notify.push); never raises.

    One query and at most a task per event: the pushes themselves go out in their own
    tasks, so a slow or absent push service never holds up a fan-out.
    """
    try:
        jobs().push_after_delivery(deliveries)
    except Exception:
        db.session.rollback()
        log.warning("could not queue web pushes for outbox %s", [oid for oid, _ in deliveries][:5], exc_info=True)


def fan_out(outbox_id: int, enqueue_batch: Callable[[int, list[int]], None] | None = None) -> int:
    """Deliver outbox row ``outbox_id`` to all its recipients; return the number reached.

    An event for everyone is published once and its inbox rows stored in bulk
    (``broadcast.deliver_to_everyone``). Otherwise, with ``enqueue_batch``, an audience of
    more than one batch is split into batch tasks that workers run in parallel
    (``deliver_split_batch`` marks the row delivered after the last); without it the
    batches run here, one after another. Safe to run twice or concurrently: a Redis lock
    keeps one dispatcher on a row, a progress key marks a split fan-out in flight, and every
    step is idempotent.
    """
    started = time.time()
    event = db.session.get(OutboxEvent, outbox_id)
    if event is None or event.delivered_at is not None or event.failed_at is not None:
        return 0
    r = bus.redis_client()
    if r.exists(channels.outbox_progress(outbox_id)):
        log.info("outbox %s is being fanned out in batches already", outbox_id)
        return 0
    audience = parse_audience(event.audience)
    if isinstance(audience, Everyone):
        event.attempts += 1
        return deliver_to_everyone(event, audience, started)
    batches = recipient_batches(audience, event.event_type, event.actor_id, current_app.config["FANOUT_BATCH_SIZE"])
    first = next(batches, [])
    second = next(batches, None)
    event.attempts += 1
    if second is None:
        # The common case, kept to a minimum of round trips: a concurrent duplicate run is
        # harmless (unique inbox rows, per-event push markers), so no lock.
        store_and_push([(event, first)])
        event.delivered_at = utcnow()
        db.session.commit()
        instruments.fanned_out(started)
        return len(first)
    return _fan_out_large(event, itertools.chain([first, second], batches), enqueue_batch, started)


def _fan_out_large(event: OutboxEvent, batches: Iterator[list[int]], enqueue_batch, started: float) -> int:
    """Many batches: one dispatcher at a time (a Redis lock), in parallel tasks if possible."""
    r = bus.redis_client()
    stall = current_app.config["FANOUT_STALL_SECONDS"]
    lock = r.lock(channels.outbox_lock(event.id), timeout=stall, blocking=False)
    if not lock.acquire():
        db.session.rollback()
        log.info("outbox %s is being fanned out by another worker", event.id)
        return 0
    try:
        db.session.commit()  # never hold the database write lock while batches insert
        if enqueue_batch is not None:
            return _dispatch(event, batches, enqueue_batch, lock, started)
        reached = 0
        for user_ids in batches:
            # Read before the batch ran: who unfollowed or muted since is left out.
            store_and_push([(event, still_recipients(event.audience, event.event_type, event.actor_id, user_ids))])
            reached += len(user_ids)
            lock.extend(stall, replace_ttl=True)
        event.delivered_at = utcnow()
        db.session.commit()
        instruments.fanned_out(started)
        return reached
    finally:
        try:
            lock.release()
        except Exception:  # the lock expired or Redis went away: nothing to release
            log.debug("outbox lock %s was already gone", event.id)


def _dispatch(event: OutboxEvent, batches: Iterator[list[int]], enqueue_batch, lock, started: float) -> int:
    """Queue a batch task per batch as the batches are read, so workers start on the first
    while later ones are still being read; return the recipients queued.

    The progress key counts the batches not yet done plus one, the dispatcher's own, given
    back when every batch is queued: whoever brings it to zero (the last batch, or this if
    the batches were quicker) marks the row delivered.
    """
    r = bus.redis_client()
    stall = current_app.config["FANOUT_STALL_SECONDS"]
    key = channels.outbox_progress(event.id)
    r.set(key, 1, ex=stall)
    r.set(channels.outbox_started(event.id), started, ex=stall)  # the last batch times the fan-out
    queued, outbox_id = 0, event.id
    for user_ids in batches:
        # Each page its own read: a snapshot held for the whole dispatch would keep SQLite
        # from checkpointing its WAL while the batches write.
        db.session.commit()
        with r.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, stall)
            pipe.execute()
        enqueue_batch(outbox_id, user_ids)
        queued += len(user_ids)
        lock.extend(stall, replace_ttl=True)
    _count_done(event, r.decr(key))
    return queued


def deliver_split_batch(outbox_id: int, user_ids: list[int]) -> int:
    """Deliver one batch of a split fan-out; the last batch marks the outbox row delivered.

    The batch's ids were read when the fan-out was split; who unfollowed or muted since
    (the question, its topic, the type) is left out now (``recipients.still_recipients``).
    """
    event = db.session.get(OutboxEvent, outbox_id)
    if event is None:
        return 0
    kept = still_recipients(event.audience, event.event_type, event.actor_id, user_ids)
    pushed = store_and_push([(event, kept)])
    _count_done(event, bus.redis_client().decr(channels.outbox_progress(outbox_id)))
    return pushed


def _count_done(event: OutboxEvent, left: int) -> None:
    """After a split fan-out's progress key was counted down to ``left``: the last one marks
    the outbox row delivered and times the fan-out."""
    r = bus.redis_client()
    key = channels.outbox_progress(event.id)
    if left < 0:
        # The progress key had lapsed (stalled, e.g. a worker died): the relay redoes the
        # whole fan-out, idempotently; this batch must not count as the last one.
        r.delete(key)
        return
    r.expire(key, current_app.config["FANOUT_STALL_SECONDS"])
    if left == 0:
        event.delivered_at = event.delivered_at or utcnow()
        db.session.commit()
        r.delete(key)
        started = r.getdel(channels.outbox_started(event.id))
        if started is not None:
            instruments.fanned_out(float(started))


def pending_outbox(older_than_seconds: float, limit: int = 500) -> list[tuple[int, datetime]]:
    """Return the ids and creation times of outbox rows not yet delivered (nor given up on,
    nor held by a drain), older than the given age, oldest first."""
    now = utcnow()
    cutoff = now - timedelta(seconds=older_than_seconds)
    rows = db.session.execute(
        select(OutboxEvent.id, OutboxEvent.created_at)
        .where(
            OutboxEvent.delivered_at.is_(None),
            OutboxEvent.failed_at.is_(None),
            OutboxEvent.created_at <= cutoff,
            or_(OutboxEvent.claimed_until.is_(None), OutboxEvent.claimed_until < now),
        )
        .order_by(OutboxEvent.id)
        .limit(limit)
    )
    return [(outbox_id, created_at) for outbox_id, created_at in rows]
