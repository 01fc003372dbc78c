"""Deliver the outbox's small events many at a time: claim, one insert, one pipeline, one update.

After a commit that emitted events, ``request_drain`` enqueues a drain task unless a drain
is queued or running (a short-lived flag in Redis). A drain takes what waits, delivers it,
and looks again, until nothing waits: what commits while it works is its next batch, so a
busy outbox is drained by one task in batches as large as the load makes them, while a lone
answer is drained at once, never held for a batch window. A drain that finds nothing waits up
to OUTBOX_DRAIN_LINGER_SECONDS on a wake-up list that a commit finding the flag set rings,
so while answers trickle in one task takes them all, each as soon as it commits, instead of
a task per answer. A round that took fewer rows than it could took all that waited, so a
lingering drain goes back to waiting rather than reading again (a commit since has rung),
and a ring is answered by claiming at once: at a trickle a round is the claim and the
delivery, no read of its own. Before it stops, a drain clears the flag and looks once more,
so a commit that found the flag still set is never left behind. Each round claims up to OUTBOX_DRAIN_ROWS waiting rows in id order, reads all
their recipients (one query per kind of audience), stores every inbox row in one insert
and one commit, pushes them all in one pipeline per Redis master and marks the rows
delivered in one UPDATE.

A claim (``claimed_until``, ``claimed_by``) keeps two drains off the same row; the same
task, redelivered after its worker died, takes its own rows again and redoes them (unique
inbox rows and push markers make that safe). An event for more than one batch of
recipients goes to a task of its own, which splits it into parallel batches (``fanout``);
an event for everyone too, which publishes it once (``broadcast``).
If a batch of rows fails, its rows are tried one at a time, so a poison event is counted
on itself and never holds up the others.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import cast

import redis
from flask import current_app
from sqlalchemy import Integer, Row, Select, Table, Update, bindparam, exists, or_, select, update

from ..extensions import db
from ..jobs import jobs
from ..metrics import instruments
from ..models import OutboxEvent, utcnow
from . import bus, channels
from .fanout import store_and_push
from .recipients import Addressed, Resolved, recipient_lists

log = logging.getLogger(__name__)

# How long "a drain is queued or running" holds without being renewed: past it a commit
# enqueues another drain (its worker is busy elsewhere, or died), which is harmless.
DRAIN_FLAG_SECONDS = 5
# A drain that still finds rows after this long hands over to a new task (and at most half
# the broker's visibility timeout, after which the broker would hand the same task out again).
DRAIN_TASK_SECONDS = 10
_outbox = cast(Table, OutboxEvent.__table__)


# KEYS: the drain flag, the wake-up list. ARGV: force (1/0), flag ttl, list ttl. Set the flag
# and return 1 (enqueue a drain), or, when a drain is queued or running, ring it and return 0.
# RPUSH, not LPUSH: on a Redis broker kombu LPUSHes each task, and the benchmarks count those.
_REQUEST_LUA = """
if ARGV[1] == '1' or redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
  redis.call('SET', KEYS[1], '1', 'EX', ARGV[2])
  return 1
end
redis.call('RPUSH', KEYS[2], '1')
redis.call('LTRIM', KEYS[2], -1, -1)
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 0
"""


def request_drain(force: bool = False) -> None:
    """Have a worker drain the outbox soon: enqueue a drain task unless one is queued or
    running, and then ring it (one Redis call either way).

    ``force`` enqueues one whatever the flag says (the relay's way: a flag whose task was
    lost only lapses after DRAIN_FLAG_SECONDS). Never raises: a broker or Redis that is
    away is logged, and the relay drains the rows later.
    """
    flag, wake = channels.outbox_drain_queued(), channels.outbox_drain_wake()
    try:
        keys_and_args = (flag, wake, int(force), DRAIN_FLAG_SECONDS, DRAIN_FLAG_SECONDS)
        if not bus.redis_client().eval(_REQUEST_LUA, 2, *keys_and_args):
            return
    except redis.RedisError:
        log.warning("could not check for a queued drain; enqueueing one", exc_info=True)
    try:
        jobs().drain_outbox()
    except Exception:  # the broker being away must never fail the user's request
        log.warning("could not enqueue an outbox drain now; the relay will retry", exc_info=True)
        with contextlib.suppress(redis.RedisError):
            bus.redis_client().delete(flag)  # so the next commit tries again


def drain_outbox(claimer: str, deliver_alone: Callable[[int], object], fan_out_apart: Callable[[int], object]) -> int:
    """Deliver the waiting outbox rows as ``claimer``, a batch at a time, until none wait; return how many.

    ``deliver_alone(outbox_id)`` delivers one row by itself and records its failure, if any;
    ``fan_out_apart(outbox_id)`` hands a row with a large audience to a task of its own.
    """
    cfg = current_app.config
    r, flag = bus.redis_client(), channels.outbox_drain_queued()
    stop_at = time.monotonic() + min(DRAIN_TASK_SECONDS, cfg["CELERY_VISIBILITY_TIMEOUT"] / 2)
    # Eager (tests): the drain runs inside the request that committed, which must not wait.
    linger = 0.0 if cfg["CELERY_ALWAYS_EAGER"] else cfg["OUTBOX_DRAIN_LINGER_SECONDS"]
    taken = 0
    tried: set[int] = set()  # rows handed over or that failed alone: this task does not retake them
    look = False  # read whether rows wait before claiming; not when a commit just asked for this drain
    while True:
        r.set(flag, claimer, ex=DRAIN_FLAG_SECONDS)  # a commit now leaves its rows to this drain, and rings it
        if not look or _rows_waiting(claimer, tried):
            took = drain_batch(claimer, tried, deliver_alone, fan_out_apart)
            taken += took
            if time.monotonic() >= stop_at:
                r.delete(flag)
                request_drain()  # the rest in a new task
                return taken
            # A full batch: claim again at once. A partial one took all that waited, and every
            # commit since rang the wake-up list: a lingering drain waits for that, without a read.
            look = took < cfg["OUTBOX_DRAIN_ROWS"] and linger <= 0
            if took >= cfg["OUTBOX_DRAIN_ROWS"] or linger <= 0:
                continue
        if linger > 0 and time.monotonic() + linger < stop_at and _rung(r, linger):
            look = False
            continue  # a commit rang while this drain waited: its rows are next
        r.delete(flag)  # from now on a commit enqueues a drain; one committed before is seen here:
        if not _rows_waiting(claimer, tried) or not r.set(flag, claimer, nx=True, ex=DRAIN_FLAG_SECONDS):
            return taken
        look = False


def _rung(r: redis.Redis, seconds: float) -> bool:
    """Wait up to ``seconds`` for a commit to ring the wake-up list; True if one did."""
    return r.blpop([channels.outbox_drain_wake()], timeout=seconds) is not None


def drain_batch(
    claimer: str, tried: set[int], deliver_alone: Callable[[int], object], fan_out_apart: Callable[[int], object]
) -> int:
    """Claim up to OUTBOX_DRAIN_ROWS waiting rows (not in ``tried``) and deliver them together.

    Return how many rows it took; add to ``tried`` those it tried alone or handed over.
    """
    started, cfg = time.time(), current_app.config
    batch_size = cfg["FANOUT_BATCH_SIZE"]
    rows = claim_waiting_rows(claimer, cfg["OUTBOX_DRAIN_ROWS"], cfg["OUTBOX_CLAIM_SECONDS"], tried)
    resolved = _resolve(rows, batch_size)
    alone = list(resolved.unresolved)
    small = [row for row in rows if row.id in resolved.recipients]
    for part in _parts(small, resolved.recipients, batch_size):
        failed = _deliver_together(part, resolved.recipients)
        alone += failed
        for _ in range(len(part) - len(failed)):
            instruments.fanned_out(started)
    db.session.commit()  # the claim, when no part committed it
    tried.update(alone, resolved.apart)
    for outbox_id in sorted(alone):
        deliver_alone(outbox_id)
    for outbox_id in resolved.apart:
        fan_out_apart(outbox_id)
    return len(rows)


def _free(tried: bool) -> list:
    """Waiting rows nobody claimed, whose claim lapsed, or that the claimer holds (the same
    task again, after its worker died), but not those it tried already (if ``tried``).

    Written with bound parameters (``now``, ``claimer``, ``tried``), so each statement
    below is built once: building and keying a statement cost more CPU than running it.
    """
    free = [
        _outbox.c.delivered_at.is_(None),
        _outbox.c.failed_at.is_(None),
        or_(
            _outbox.c.claimed_until.is_(None),
            _outbox.c.claimed_until < bindparam("now"),
            _outbox.c.claimed_by == bindparam("claimer"),
        ),
    ]
    if tried:
        free.append(_outbox.c.id.not_in(bindparam("tried", expanding=True)))
    return free


@functools.cache
def _waiting_query(tried: bool) -> Select:
    return select(exists().where(*_free(tried)))


@functools.cache
def _claim_statement(tried: bool) -> Update:
    waiting = _free(tried)
    # A CTE, so PostgreSQL picks (and locks) the rows once; a subquery in IN may run again.
    oldest = (
        select(_outbox.c.id)
        .where(*waiting)
        .order_by(_outbox.c.id)
        .limit(bindparam("limit", type_=Integer))
        .with_for_update(skip_locked=True)
    ).cte("oldest")
    return (
        update(_outbox)
        .where(_outbox.c.id.in_(select(oldest.c.id)), *waiting)
        .values(claimed_until=bindparam("until"), claimed_by=bindparam("claimer"), attempts=_outbox.c.attempts + 1)
        .returning(
            _outbox.c.id,
            _outbox.c.event_type,
            _outbox.c.payload,
            _outbox.c.audience,
            _outbox.c.actor_id,
            _outbox.c.created_at,
        )
    )


_MARK_DELIVERED = (
    update(_outbox)
    .where(_outbox.c.id.in_(bindparam("ids", expanding=True)), _outbox.c.delivered_at.is_(None))
    .values(delivered_at=bindparam("now"))
)


def _free_params(claimer: str, tried: set[int]) -> dict:
    return {"now": utcnow(), "claimer": claimer, **({"tried": sorted(tried)} if tried else {})}


def _rows_waiting(claimer: str, tried: set[int]) -> bool:
    """Whether any row waits for ``claimer`` (a read: it takes no write lock)."""
    waiting = bool(db.session.scalar(_waiting_query(bool(tried)), _free_params(claimer, tried)))
    db.session.rollback()  # end the read, so the next one sees what committed meanwhile
    return waiting


def claim_waiting_rows(claimer: str, limit: int, lease_seconds: float, tried: set[int] | None = None) -> list[Row]:
    """Claim up to ``limit`` waiting outbox rows, oldest first, for ``lease_seconds``; return them.

    The claim is part of the caller's transaction: its first commit (with the first inbox
    rows, as a rule) makes it hold.

    A row is free when nobody claimed it, its claim lapsed, or ``claimer`` holds it (the
    same task again, after its worker died). Concurrent drains get different rows: on
    PostgreSQL the rows are locked as they are picked (``SKIP LOCKED``) and the claim is
    checked again as it is written; SQLite has one writer at a time.
    """
    tried = tried or set()
    params = _free_params(claimer, tried)
    params.update(limit=limit, until=params["now"] + timedelta(seconds=lease_seconds))
    claimed = db.session.execute(_claim_statement(bool(tried)), params).all()
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


def _resolve(rows: list[Row], batch_size: int) -> Resolved:
    """Read the rows' recipients together; if that fails, every row is to be tried alone."""
    try:
        addressed = [Addressed(row.id, row.audience, row.event_type, row.actor_id) for row in rows]
        return recipient_lists(addressed, batch_size)
    except Exception as exc:
        db.session.rollback()
        log.warning(
            "reading the recipients of %d outbox rows failed; trying them one at a time", len(rows), exc_info=True
        )
        return Resolved({}, [], {row.id: exc for row in rows})


def _deliver_together(rows: list[Row], recipients: dict[int, list[int]]) -> list[int]:
    """Store and push these rows' events in one insert and one pipeline, then mark them delivered.

    Return the rows to try one at a time: none, or all of them if anything failed.
    """
    try:
        store_and_push([(row, recipients[row.id]) for row in rows])
        db.session.execute(_MARK_DELIVERED, {"ids": [row.id for row in rows], "now": utcnow()})
        db.session.commit()
    except Exception:
        db.session.rollback()
        log.warning("delivering %d outbox rows together failed; trying them one at a time", len(rows), exc_info=True)
        return [row.id for row in rows]
    return []
