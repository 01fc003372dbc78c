"""Celery tasks: thin wrappers, each one step of delivery, relay, ingestion or email, found by import."""

from __future__ import annotations

import logging
from contextlib import contextmanager

import redis
from celery import Task, shared_task
from flask import current_app
from sqlalchemy.exc import OperationalError

from qa_notify.events import drain, fanout, ingest, outbox
from qa_notify.extensions import db
from qa_notify.mail import confirm, scan
from qa_notify.metrics import instruments
from qa_notify.notifications import retention

log = logging.getLogger(__name__)
# Errors worth retrying: Redis or the database being briefly away.
TRANSIENT_ERRORS = (redis.ConnectionError, redis.TimeoutError, OperationalError)


# Delivery tasks: acknowledged only when done (a killed worker's task runs again), retried
# with backoff on transient errors, safe to repeat.
DELIVERY_TASK = {
    "acks_late": True,
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "max_retries": None,
}


def enqueue(task: Task, *args: object, **options: object) -> None:
    """Queue ``task`` (a task of this module) on this Flask app's Celery app.

    One process can hold several Flask apps, each with its own Celery app (the tests do):
    the task object imported here stands for all of them, so the one bound to the app in
    context is picked by the task's name.
    """
    current_app.extensions["celery"].tasks[task.name].apply_async(args=list(args), **options)


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


def fan_out_recording_failure(outbox_id: int) -> int:
    """Fan one outbox event out here (a large audience in parallel batch tasks); a failure is counted on its row."""
    with delivery_attempt(outbox_id):
        return fanout.fan_out(outbox_id, enqueue_batch=lambda oid, ids: enqueue(fan_out_batch, oid, ids))
    return 0


@shared_task(name="workers.drain_outbox", bind=True, **DELIVERY_TASK)
def drain_outbox(self: Task) -> int:
    """Deliver the waiting outbox events many at a time (see qa_notify.events.drain)."""
    return drain.drain_outbox(
        self.request.id,
        deliver_alone=fan_out_recording_failure,
        fan_out_apart=lambda outbox_id: enqueue(fan_out_event, outbox_id),
    )


@shared_task(name="workers.fan_out_event", **DELIVERY_TASK)
def fan_out_event(outbox_id: int) -> int:
    """Deliver one outbox event to all its recipients (idempotent), in parallel batches."""
    return fan_out_recording_failure(outbox_id)


@shared_task(name="workers.fan_out_batch", **DELIVERY_TASK)
def fan_out_batch(outbox_id: int, user_ids: list[int]) -> int:
    """Deliver one batch of a split fan-out (idempotent); the last marks the event delivered."""
    with delivery_attempt(outbox_id):
        return fanout.deliver_split_batch(outbox_id, user_ids)
    return 0


@shared_task(name="workers.relay_outbox")
def relay_outbox() -> int:
    """Drain the outbox if events wait too long (the broker was away at commit, a drain died)."""
    rows = fanout.pending_outbox(current_app.config["OUTBOX_RELAY_AGE_SECONDS"])
    instruments.relayed([created_at for _, created_at in rows])
    if rows:
        drain.request_drain(force=True)
    return len(rows)


@shared_task(name="workers.ingest_external")
def ingest_external() -> int:
    """Accept envelopes that other services appended to the ingest stream."""
    return ingest.ingest_pending()


@shared_task(name="workers.scan_email")
def scan_email() -> int:
    """Find users owed an away email (or a digest retry) and hand them out in small chunks."""
    return scan.scan(lambda kind, ids: enqueue(email_users, kind, ids))


@shared_task(name="workers.send_digests")
def send_digests() -> int:
    """Start the daily digest: every digest user, in small chunks."""
    return scan.start_digests(lambda kind, ids: enqueue(email_users, kind, ids))


# Bounded per run and safe to repeat; a run lost with its worker is the next run's work.
@shared_task(name="workers.purge_read_notifications", acks_late=False)
def purge_read_notifications() -> int:
    """Delete notifications read longer ago than the inbox keeps them (unread ones stay)."""
    return retention.purge_read_notifications()


@shared_task(name="workers.confirm_email")
def confirm_email(user_id: int) -> str:
    """Email a new address the link that confirms it."""
    return confirm.send_confirmation(user_id)


# Acknowledged on receipt (not acks_late): a chunk lost with its worker is found again by
# the next scan; what each user was sent is in the database either way, never doubled.
@shared_task(name="workers.email_users", acks_late=False)
def email_users(kind: str, user_ids: list[int]) -> dict:
    """Email each of these users (``away`` or ``digest``) what they are owed, one at a time."""
    return scan.email_users(kind, user_ids)
