"""Deliver the outbox's small events many at a time: claim, one insert, one pipeline, one update.

After a commit that emitted events, ``request_drain`` enqueues a drain task unless one is
queued and not started yet (a short-lived flag in Redis, cleared by the drain before it
reads the outbox), so a burst of commits makes a handful of tasks while a lone answer is
drained at once, never held for a batch window. A drain claims up to OUTBOX_DRAIN_ROWS
waiting rows in id order, reads all their recipients in one query, stores every inbox row
in one insert and one commit, pushes them all in one pipeline per Redis master and marks
the rows delivered in one UPDATE.

A claim (``claimed_until``, ``claimed_by``) keeps two drains off the same row; the same
task, redelivered after its worker died, takes its own rows again and redoes them (unique
inbox rows and push markers make that safe). An event for more than one batch of
recipients goes to a task of its own, which splits it into parallel batches (``fanout``).
If a batch of rows fails, its rows are tried one at a time, so a poison event is counted
on itself and never holds up the others.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from datetime import timedelta

import redis
from flask import current_app
from sqlalchemy import Row, or_, select, update

from ..extensions import db
from ..metrics import instruments
from ..models import OutboxEvent, utcnow
from . import bus, channels
from .fanout import store_and_push
from .recipients import Addressed, recipient_lists

log = logging.getLogger(__name__)

# How long "a drain is queued" holds: past it a commit enqueues another drain even if the
# queued one has not started (its worker is busy, or it was lost), which is harmless.
DRAIN_FLAG_SECONDS = 5
_outbox = OutboxEvent.__table__


def request_drain(force: bool = False) -> None:
    """Have a worker drain the outbox soon: enqueue a drain task unless one is queued already.

    ``force`` enqueues one whatever the flag says (the relay's way: a flag whose task was
    lost only lapses after DRAIN_FLAG_SECONDS). Never raises: a broker or Redis that is
    away is logged, and the relay drains the rows later.
    """
    flag = channels.outbox_drain_queued()
    try:
        if not force and not bus.redis_client().set(flag, 1, nx=True, ex=DRAIN_FLAG_SECONDS):
            return
    except redis.RedisError:
        log.warning("could not check for a queued drain; enqueueing one", exc_info=True)
    try:
        current_app.extensions["celery"].tasks["workers.drain_outbox"].apply_async(retry=False)
    except Exception:  # the broker being away must never fail the user's request
        log.warning("could not enqueue an outbox drain now; the relay will retry", exc_info=True)
        with contextlib.suppress(redis.RedisError):
            bus.redis_client().delete(flag)  # so the next commit tries again


def drain_outbox(claimer: str, deliver_alone: Callable[[int], object], fan_out_apart: Callable[[int], object]) -> int:
    """Deliver up to OUTBOX_DRAIN_ROWS waiting outbox rows together, as ``claimer``; return how many it took.

    ``deliver_alone(outbox_id)`` delivers one row by itself and records its failure, if any;
    ``fan_out_apart(outbox_id)`` hands a row with a large audience to a task of its own.
    """
    started, cfg = time.time(), current_app.config
    bus.redis_client().delete(channels.outbox_drain_queued())  # before reading: no commit goes unseen
    limit, batch_size = cfg["OUTBOX_DRAIN_ROWS"], cfg["FANOUT_BATCH_SIZE"]
    rows = claim_waiting_rows(claimer, limit, cfg["FANOUT_STALL_SECONDS"])
    if len(rows) == limit:
        request_drain()  # more may be waiting: another worker can start on them now
    recipients, alone = _resolve(rows, batch_size)
    small = [row for row in rows if len(recipients.get(row.id, ())) <= batch_size and row.id in recipients]
    for part in _parts(small, recipients, batch_size):
        failed = _deliver_together(part, recipients)
        alone += failed
        for _ in range(len(part) - len(failed)):
            instruments.fanned_out(started)
    for outbox_id in sorted(alone):
        deliver_alone(outbox_id)
    for row in rows:
        if len(recipients.get(row.id, ())) > batch_size:
            fan_out_apart(row.id)
    return len(rows)


def claim_waiting_rows(claimer: str, limit: int, lease_seconds: float) -> list[Row]:
    """Claim up to ``limit`` waiting outbox rows, oldest first, for ``lease_seconds``; return them.

    A row is free when nobody claimed it, its claim lapsed, or ``claimer`` holds it (the
    same task again, after its worker died). Concurrent drains get different rows: on
    PostgreSQL the rows are locked as they are picked (``SKIP LOCKED``) and the claim is
    checked again as it is written; SQLite has one writer at a time.
    """
    now = utcnow()
    free = or_(_outbox.c.claimed_until.is_(None), _outbox.c.claimed_until < now, _outbox.c.claimed_by == claimer)
    waiting = (_outbox.c.delivered_at.is_(None), _outbox.c.failed_at.is_(None), free)
    # A CTE, so PostgreSQL picks (and locks) the rows once; a subquery in IN may run again.
    oldest = (
        select(_outbox.c.id).where(*waiting).order_by(_outbox.c.id).limit(limit).with_for_update(skip_locked=True)
    ).cte("oldest")
    claimed = db.session.execute(
        update(_outbox)
        .where(_outbox.c.id.in_(select(oldest.c.id)), *waiting)
        .values(
            claimed_until=now + timedelta(seconds=lease_seconds),
            claimed_by=claimer,
            attempts=_outbox.c.attempts + 1,
        )
        .returning(
            _outbox.c.id,
            _outbox.c.event_type,
            _outbox.c.payload,
            _outbox.c.audience,
            _outbox.c.actor_id,
            _outbox.c.created_at,
        )
    ).all()
    db.session.commit()
    return sorted(claimed, key=lambda row: row.id)


def _parts(rows: list[Row], recipients: dict[int, list[int]], batch_size: int) -> list[list[Row]]:
    """Split rows into parts of at most ``batch_size`` recipients in all (a row is never split)."""
    parts: list[list[Row]] = [[]]
    size = 0
    for row in rows:
        count = len(recipients[row.id])
        if parts[-1] and size + count > batch_size:
            parts.append([])
            size = 0
        parts[-1].append(row)
        size += count
    return [part for part in parts if part]


def _resolve(rows: list[Row], batch_size: int) -> tuple[dict[int, list[int]], list[int]]:
    """Read the rows' recipients in one query; return them, and the rows to try one at a time."""
    try:
        recipients, unresolved = recipient_lists(
            [Addressed(row.id, row.audience, row.event_type, row.actor_id) for row in rows], batch_size
        )
    except Exception:
        db.session.rollback()
        log.warning(
            "reading the recipients of %d outbox rows failed; trying them one at a time", len(rows), exc_info=True
        )
        return {}, [row.id for row in rows]
    return recipients, list(unresolved)


def _deliver_together(rows: list[Row], recipients: dict[int, list[int]]) -> list[int]:
    """Store and push these rows' events in one insert and one pipeline, then mark them delivered.

    Return the rows to try one at a time: none, or all of them if anything failed.
    """
    try:
        store_and_push([(row, recipients[row.id]) for row in rows])
        db.session.execute(
            update(_outbox)
            .where(_outbox.c.id.in_([row.id for row in rows]), _outbox.c.delivered_at.is_(None))
            .values(delivered_at=utcnow())
        )
        db.session.commit()
    except Exception:
        db.session.rollback()
        log.warning("delivering %d outbox rows together failed; trying them one at a time", len(rows), exc_info=True)
        return [row.id for row in rows]
    return []
