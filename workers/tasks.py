"""Celery tasks: thin wrappers that run the fan-out, the outbox relay and external ingestion."""

from __future__ import annotations

import logging
from contextlib import contextmanager

import redis
from celery import Celery
from flask import current_app
from sqlalchemy.exc import OperationalError

from qa_notify.events import fanout, ingest
from qa_notify.extensions import db

log = logging.getLogger(__name__)
# Errors worth retrying: Redis or the database being briefly away.
TRANSIENT_ERRORS = (redis.ConnectionError, redis.TimeoutError, OperationalError)


# Delivery tasks: acknowledged only when done (a killed worker's task runs again), retried
# with backoff on transient errors, safe to repeat.
DELIVERY_TASK = {
    "shared": False,
    "acks_late": True,
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "max_retries": None,
}


@contextmanager
def rollback_on_transient_error():
    """Roll the session back before a retry, so the next attempt starts clean."""
    try:
        yield
    except TRANSIENT_ERRORS:
        db.session.rollback()
        raise


def register(celery: Celery) -> None:
    """Register qa_notify's tasks on ``celery``."""

    @celery.task(name="workers.fan_out_event", **DELIVERY_TASK)
    def fan_out_event(outbox_id: int) -> int:
        """Deliver one outbox event to all its recipients (idempotent), in parallel batches."""
        with rollback_on_transient_error():
            return fanout.fan_out(outbox_id, enqueue_batch=lambda oid, ids: deliver_batch.apply_async(args=[oid, ids]))

    @celery.task(name="workers.deliver_batch", **DELIVERY_TASK)
    def deliver_batch(outbox_id: int, user_ids: list[int]) -> int:
        """Deliver one batch of a large fan-out (idempotent)."""
        with rollback_on_transient_error():
            return fanout.finish_batch(outbox_id, user_ids)

    @celery.task(name="workers.relay_outbox", shared=False)
    def relay_outbox() -> int:
        """Re-enqueue outbox events still undelivered after a while (broker away at commit)."""
        from qa_notify.events.outbox import enqueue_fan_out

        ids = fanout.pending_outbox_ids(current_app.config["OUTBOX_RELAY_AGE_SECONDS"])
        enqueue_fan_out(ids)
        return len(ids)

    @celery.task(name="workers.ingest_external", shared=False)
    def ingest_external() -> int:
        """Accept envelopes that other services appended to the ingest stream."""
        return ingest.ingest_pending()
