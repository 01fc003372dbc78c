"""The domain's one entry point into notifications: ``emit`` an event inside a transaction.

The event is written to the outbox table in the same transaction as the question, answer
or broadcast that caused it, so a rolled-back change notifies nobody. After the commit a
worker is asked to drain the outbox (``drain.request_drain``); if the broker is away, the
periodic relay asks again later.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from .. import strictjson
from ..extensions import db
from ..models import OutboxEvent, utcnow
from .audiences import Audience
from .drain import request_drain
from .types import Event, event_type_of, question_id_of

_PENDING_KEY = "qa_notify_outbox_pending"
_INSERT = insert(cast(Table, OutboxEvent.__table__)).returning(OutboxEvent.__table__.c.id)


def emit(event: Event, audience: Audience, actor_id: int | None = None, source_key: str | None = None) -> int:
    """Record ``event`` for ``audience`` in the current transaction; it is sent after commit.
    Return its outbox id.

    ``audience`` names who must hear of it, e.g. ``QuestionFollowers(question_id=3)``
    (``events.audiences``; stored as its JSON); ``events.recipients`` turns it into user ids. ``actor_id`` is
    never notified of their own action. ``source_key`` (unique) names an outside origin,
    so the same outside message can never become two events.

    Raise ``strictjson.StrictJSONError`` (a ValueError) for a payload that could be stored
    but never sent (a lone surrogate, NaN, absurd nesting): refused here, before it exists.
    The row is one INSERT of its own, not an ORM object: nothing reads it back in the
    transaction that writes it, and a flush of the unit of work cost more than the answer's.
    """
    payload = event.payload()
    strictjson.dumps(payload)
    outbox_id = db.session.execute(
        _INSERT,
        {
            "event_type": event_type_of(event),
            "payload": payload,
            "audience": audience.to_json(),
            "actor_id": actor_id,
            "source_key": source_key,
            "group_key": event.group_key(),
            "question_id": question_id_of(event),
        },
    ).scalar_one()
    db.session.info.setdefault(_PENDING_KEY, []).append(outbox_id)
    return outbox_id


def _after_commit(session: Session) -> None:
    if session.info.pop(_PENDING_KEY, None):
        request_drain()


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


def failed_events(limit: int = 50) -> list[OutboxEvent]:
    """Return the events that failed too often to be retried automatically, newest first."""
    query = select(OutboxEvent).where(OutboxEvent.failed_at.is_not(None)).order_by(OutboxEvent.id.desc())
    return list(db.session.scalars(query.limit(limit)))


def outbox_counts() -> dict[str, int]:
    """Return how many events wait for delivery and how many failed (for /metrics)."""
    waiting = (OutboxEvent.delivered_at.is_(None), OutboxEvent.failed_at.is_(None))
    return {
        "undelivered": db.session.scalar(select(func.count()).select_from(OutboxEvent).where(*waiting)) or 0,
        "failed": db.session.scalar(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.failed_at.is_not(None))
        )
        or 0,
    }


def oldest_undelivered() -> datetime | None:
    """Return when the oldest event still waiting for delivery (not failed) was created, or None."""
    waiting = (OutboxEvent.delivered_at.is_(None), OutboxEvent.failed_at.is_(None))
    return db.session.scalar(select(func.min(OutboxEvent.created_at)).where(*waiting))


def retry_failed(outbox_id: int) -> bool:
    """Give a failed event a fresh set of tries (after the cause was fixed); False if it is not failed."""
    row = db.session.get(OutboxEvent, outbox_id)
    if row is None or row.failed_at is None:
        return False
    row.failed_at, row.failures, row.last_error, row.claimed_until = None, 0, None, None
    db.session.info.setdefault(_PENDING_KEY, []).append(row.id)
    db.session.commit()
    return True


def record_failure(outbox_id: int, error: BaseException, max_failures: int, retry_after: float = 0) -> bool:
    """Count a failed delivery attempt of ``outbox_id``; return True once it is marked failed.

    At ``max_failures`` the row is marked failed: the relay stops re-enqueueing it, so a
    poison event costs a few tries and never holds up the rows behind it. Until then no
    drain takes it again for ``retry_after`` seconds.
    """
    db.session.rollback()
    row = db.session.get(OutboxEvent, outbox_id)
    if row is None or row.delivered_at is not None:
        return False
    row.failures += 1
    row.last_error = f"{type(error).__name__}: {error}"[:2000]
    if row.failures >= max_failures:
        row.failed_at = row.failed_at or utcnow()
    row.claimed_until, row.claimed_by = utcnow() + timedelta(seconds=retry_after), None
    db.session.commit()
    return row.failed_at is not None
