"""The domain's one entry point into notifications: ``emit`` an event inside a transaction.

The event is written to the outbox table in the same transaction as the question, answer
or broadcast that caused it, so a rolled-back change notifies nobody. After the commit a
Celery task is enqueued for it; if the broker is away, the periodic relay enqueues it later.
"""

from __future__ import annotations

import logging

from flask import current_app
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from ..extensions import db
from ..models import OutboxEvent
from .types import Event, event_type_of

log = logging.getLogger(__name__)
_PENDING_KEY = "qa_notify_outbox_pending"


def emit(event: Event, audience: dict, actor_id: int | None = None) -> OutboxEvent:
    """Record ``event`` for ``audience`` in the current transaction; it is sent after commit.

    ``audience`` names who must hear of it, e.g. ``{"kind": "question_followers",
    "question_id": 3}``; ``events.recipients`` turns it into user ids. ``actor_id`` is
    never notified of their own action.
    """
    row = OutboxEvent(
        event_type=event_type_of(event),
        payload=event.payload(),
        audience=audience,
        actor_id=actor_id,
    )
    db.session.add(row)
    db.session.flush()
    db.session.info.setdefault(_PENDING_KEY, []).append(row.id)
    return row


def enqueue_fan_out(outbox_ids: list[int]) -> None:
    """Hand outbox rows to the workers; a broker failure is logged, the relay retries later."""
    if not outbox_ids:
        return
    task = current_app.extensions["celery"].tasks["workers.fan_out_event"]
    for outbox_id in outbox_ids:
        try:
            task.apply_async(args=[outbox_id], retry=False)
        except Exception:  # the broker being away must never fail the user's request
            log.warning("could not enqueue outbox %s now; the relay will retry", outbox_id, exc_info=True)


def _after_commit(session: Session) -> None:
    pending = session.info.pop(_PENDING_KEY, [])
    if pending:
        enqueue_fan_out(pending)


def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


def register_outbox_hooks() -> None:
    """Enqueue after commit, forget on rollback. Called once by the app factory."""
    if not sa_event.contains(Session, "after_commit", _after_commit):
        sa_event.listen(Session, "after_commit", _after_commit)
        sa_event.listen(Session, "after_soft_rollback", _after_rollback_soft)


def _after_rollback_soft(session: Session, previous_transaction) -> None:
    if previous_transaction.parent is None:
        _after_rollback(session)
