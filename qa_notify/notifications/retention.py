"""Inbox retention: delete notifications read more than ``INBOX_RETENTION_DAYS`` ago, in bounded batches.

Unread notifications are kept however old (the inbox is the system of record for what a
user has not seen yet). "Older than 90 days" is counted from when it was *read*: a
notification is read after it is created, so it is also older than that, and one read
today does not vanish from under the user at the next run. Archived items are read, so
they go the same way. Each batch is one ``DELETE ... WHERE id IN (SELECT ... LIMIT n)``
committed on its own, so no transaction holds many locks or a long undo log; a run stops
after ``INBOX_RETENTION_MAX_BATCHES`` and the next run carries on.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import cast

from flask import current_app
from sqlalchemy import CursorResult, delete, select

from ..extensions import db
from ..models import Notification, utcnow

log = logging.getLogger(__name__)


def purge_read_notifications() -> int:
    """Delete read notifications past the retention period, batch by batch; return how many went."""
    cfg = current_app.config
    cutoff = utcnow() - timedelta(days=cfg["INBOX_RETENTION_DAYS"])
    batch = cfg["INBOX_RETENTION_BATCH"]
    total = 0
    for _ in range(cfg["INBOX_RETENTION_MAX_BATCHES"]):
        oldest = select(Notification.id).where(Notification.read_at < cutoff).order_by(Notification.id).limit(batch)
        result = db.session.execute(
            delete(Notification).where(Notification.id.in_(oldest)).execution_options(synchronize_session=False)
        )
        deleted = max(cast(CursorResult, result).rowcount or 0, 0)
        db.session.commit()
        total += deleted
        if deleted < batch:
            break
    if total:
        log.info("inbox retention: deleted %d notifications read before %s", total, cutoff.isoformat())
    return total
