"""Celery tasks: thin wrappers that run the outbox drain and fan-out, the relay, external ingestion and email."""

from __future__ import annotations

import logging
from contextlib import contextmanager

import redis
from celery import Celery
from flask import current_app
from sqlalchemy.exc import OperationalError

from qa_notify.events import drain, fanout, ingest, outbox
from qa_notify.extensions import db
from qa_notify.mail import confirm, scan
from qa_notify.metrics import instruments

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
def delivery_attempt(outbox_id: int):
    """Run one try at delivering ``outbox_id``.

    A passing outage (Redis or the database away) rolls back and re-raises, so Celery
    retries with backoff. Anything else is a fault of this event or a bug: it is logged and
    counted on the row, which waits OUTBOX_RELAY_AGE_SECONDS for its next try, is marked
    failed after OUTBOX_MAX_FAILURES tries and then left alone, so one poison event can
    never hold up the others.
    """
    try:
        yield
    except TRANSIENT_ERRORS:
        db.session.rollback()
        raise
    except Exception as exc:
        log.exception("delivering outbox %s failed", outbox_id)
        cfg = current_app.config
        if outbox.record_failure(outbox_id, exc, cfg["OUTBOX_MAX_FAILURES"], cfg["OUTBOX_RELAY_AGE_SECONDS"]):
            log.error("outbox %s marked failed; it is listed on the admin page until retried", outbox_id)


def register(celery: Celery) -> None:
    """Register qa_notify's tasks on ``celery``."""

    def fan_out_alone(outbox_id: int) -> int:
        """Deliver one outbox event by itself (idempotent); a large audience in parallel batches."""
        with delivery_attempt(outbox_id):
            return fanout.fan_out(outbox_id, enqueue_batch=lambda oid, ids: deliver_batch.apply_async(args=[oid, ids]))
        return 0

    @celery.task(name="workers.drain_outbox", bind=True, **DELIVERY_TASK)
    def drain_outbox(self) -> int:
        """Deliver the waiting outbox events many at a time (see qa_notify.events.drain)."""
        return drain.drain_outbox(
            self.request.id,
            deliver_alone=fan_out_alone,
            fan_out_apart=lambda outbox_id: fan_out_event.apply_async(args=[outbox_id]),
        )

    @celery.task(name="workers.fan_out_event", **DELIVERY_TASK)
    def fan_out_event(outbox_id: int) -> int:
        """Deliver one outbox event to all its recipients (idempotent), in parallel batches."""
        return fan_out_alone(outbox_id)

    @celery.task(name="workers.deliver_batch", **DELIVERY_TASK)
    def deliver_batch(outbox_id: int, user_ids: list[int]) -> int:
        """Deliver one batch of a split fan-out (idempotent); the last marks the event delivered."""
        with delivery_attempt(outbox_id):
            return fanout.deliver_batch(outbox_id, user_ids)
        return 0

    @celery.task(name="workers.relay_outbox", shared=False)
    def relay_outbox() -> int:
        """Drain the outbox if events wait too long (the broker was away at commit, a drain died)."""
        rows = fanout.pending_outbox(current_app.config["OUTBOX_RELAY_AGE_SECONDS"])
        instruments.relayed([created_at for _, created_at in rows])
        if rows:
            drain.request_drain(force=True)
        return len(rows)

    @celery.task(name="workers.ingest_external", shared=False)
    def ingest_external() -> int:
        """Accept envelopes that other services appended to the ingest stream."""
        return ingest.ingest_pending()

    @celery.task(name="workers.scan_email", shared=False)
    def scan_email() -> int:
        """Find users owed an away email (or a digest retry) and hand them out in small chunks."""
        return scan.scan(lambda kind, ids: email_users.apply_async(args=[kind, ids]))

    @celery.task(name="workers.send_digests", shared=False)
    def send_digests() -> int:
        """Start the daily digest: every digest user, in small chunks."""
        return scan.start_digests(lambda kind, ids: email_users.apply_async(args=[kind, ids]))

    @celery.task(name="workers.confirm_email", shared=False)
    def confirm_email(user_id: int) -> str:
        """Email a new address the link that confirms it."""
        return confirm.send_confirmation(user_id)

    # Acknowledged on receipt (not acks_late): a chunk lost with its worker is found again by
    # the next scan; what each user was sent is in the database either way, never doubled.
    @celery.task(name="workers.email_users", shared=False, acks_late=False)
    def email_users(kind: str, user_ids: list[int]) -> dict:
        """Email each of these users (``away`` or ``digest``) what they are owed, one at a time."""
        return scan.email_users(kind, user_ids)
