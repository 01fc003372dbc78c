"""Turn outbox rows into inbox rows and live pushes for every recipient, exactly once.

Called by the Celery tasks in ``workers`` for one row, and by ``drain`` for many small rows
at once; an event for everyone goes to ``broadcast`` (published once, not per user). Each batch first inserts inbox rows (a unique (user, outbox) constraint makes a
retried batch insert nothing new), commits, then pushes the batch to Redis, where a
per-notification marker skips what an earlier try pushed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import bindparam, or_, select

from ..extensions import db
from ..jobs import jobs
from ..metrics import instruments
from ..models import Notification, OutboxEvent, inbox_insert, utcnow
from . import bus, channels
from .audiences import Everyone, parse_audience
from .broadcast import deliver_to_everyone
from .recipients import recipient_batches, still_recipients

log = logging.getLogger(__name__)

# The ids of the inbox rows just stored (built once: building a statement costs more than running it).
_STORED = (
    select(Notification.outbox_id, Notification.user_id, Notification.id)
    .where(
        Notification.outbox_id.in_(bindparam("outbox_ids", expanding=True)),
        Notification.user_id.in_(bindparam("user_ids", expanding=True)),
    )
    .order_by(Notification.user_id)
)


def store_and_push(deliveries: list[tuple[Any, list[int]]]) -> int:
    """Store each ``(event, user ids)`` pair's inbox rows in one insert and one commit, then
    push them all in one pipeline per Redis master; return how many were pushed live now.

    ``event`` is an outbox row, or any row with its ``id``, ``event_type``, ``payload``
    and ``created_at``.
    """
    now = utcnow()
    rows = [{"user_id": uid, "outbox_id": event.id, "created_at": now} for event, uids in deliveries for uid in uids]
    if not rows:
        return 0
    db.session.execute(inbox_insert(), rows)
    stored = db.session.execute(
        _STORED,
        {"outbox_ids": sorted({event.id for event, _ in deliveries}), "user_ids": sorted({r["user_id"] for r in rows})},
    ).all()
    db.session.commit()
    wanted = {(row["outbox_id"], row["user_id"]) for row in rows}
    recipients: dict[int, list[tuple[int, int]]] = {}
    for outbox_id, user_id, notification_id in stored:
        if (outbox_id, user_id) in wanted:
            recipients.setdefault(outbox_id, []).append((user_id, notification_id))
    events = [(event.event_type, event.payload, recipients.get(event.id, [])) for event, _ in deliveries]
    pushed = bus.push_events(bus.redis_client(), events)
    for (event, _), count in zip(deliveries, pushed, strict=True):
        instruments.pushed(event.created_at, count)
    hand_to_web_push([(event.id, [uid for uid, _ in recipients.get(event.id, [])]) for event, _ in deliveries])
    return sum(pushed)


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
    batches = list(
        recipient_batches(audience, event.event_type, event.actor_id, current_app.config["FANOUT_BATCH_SIZE"])
    )
    event.attempts += 1
    if len(batches) <= 1:
        # The common case, kept to a minimum of round trips: a concurrent duplicate run is
        # harmless (unique inbox rows, per-notification push markers), so no lock.
        store_and_push([(event, user_ids) for user_ids in batches])
        event.delivered_at = utcnow()
        db.session.commit()
        instruments.fanned_out(started)
        return sum(len(b) for b in batches)
    return _fan_out_large(event, batches, enqueue_batch, started)


def _fan_out_large(event: OutboxEvent, batches: list[list[int]], enqueue_batch, started: float) -> int:
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
            r.set(channels.outbox_progress(event.id), len(batches), ex=stall)
            r.set(channels.outbox_started(event.id), started, ex=stall)  # the last batch times the fan-out
            for user_ids in batches:
                enqueue_batch(event.id, user_ids)
        else:
            for user_ids in batches:
                # Read before the batches ran: who unfollowed or muted since is left out.
                store_and_push([(event, still_recipients(event.audience, event.event_type, event.actor_id, user_ids))])
                lock.extend(stall, replace_ttl=True)
            event.delivered_at = utcnow()
            db.session.commit()
            instruments.fanned_out(started)
        return sum(len(b) for b in batches)
    finally:
        try:
            lock.release()
        except Exception:  # the lock expired or Redis went away: nothing to release
            log.debug("outbox lock %s was already gone", event.id)


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
    r = bus.redis_client()
    key = channels.outbox_progress(outbox_id)
    left = r.decr(key)
    if left < 0:
        # The progress key had lapsed (stalled, e.g. a worker died): the relay redoes the
        # whole fan-out, idempotently; this batch must not count as the last one.
        r.delete(key)
        return pushed
    r.expire(key, current_app.config["FANOUT_STALL_SECONDS"])
    if left == 0:
        event.delivered_at = event.delivered_at or utcnow()
        db.session.commit()
        r.delete(key)
        started = r.getdel(channels.outbox_started(outbox_id))
        if started is not None:
            instruments.fanned_out(float(started))
    return pushed


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
