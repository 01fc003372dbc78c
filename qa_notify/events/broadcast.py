"""Deliver an event for everyone once: one publish every web process hears, then the inbox rows in bulk.

An admin's broadcast (an ``Everyone`` audience) is not written per user. One Lua call
appends it to the broadcast stream and publishes it on the broadcast channel (``bus``),
carrying who it is for (the role, if any, and its author) so each web process hands it to
its own streams of the users it is for; a reconnecting stream replays it from the
broadcast stream. Then every recipient gets an inbox row, by ``INSERT ... SELECT`` in
keyset batches of users, and the outbox row is marked delivered.

Redone after a crash at any step, it publishes nothing twice (the marker keyed by the
outbox row returns the first entry's id) and inserts no inbox row twice (unique per user
and event).
"""

from __future__ import annotations

import logging
import time
from typing import cast

from sqlalchemy import CursorResult, DateTime, Integer, literal, select

from ..extensions import db
from ..jobs import jobs
from ..metrics import instruments
from ..models import OutboxEvent, User, inbox_insert, utcnow
from . import bus
from .audiences import Everyone
from .recipients import everyone_select

# Users per INSERT ... SELECT (and per commit): short transactions however many users there are.
INBOX_BATCH = 20_000

log = logging.getLogger(__name__)


def deliver_to_everyone(event: OutboxEvent, audience: Everyone, started: float | None = None) -> int:
    """Publish ``event`` once for ``audience``, store its inbox rows and mark it delivered; return the rows added."""
    started = time.time() if started is None else started
    bus.publish_broadcast(bus.redis_client(), event.id, event.event_type, event.payload, audience.role, event.actor_id)
    instruments.pushed(event.created_at, 1)
    db.session.commit()  # the attempt count; the publish is done whatever happens next
    added = store_inbox_rows(event.id, everyone_select(audience, event.event_type, event.actor_id))
    event.delivered_at = event.delivered_at or utcnow()
    db.session.commit()
    instruments.fanned_out(started)
    try:  # Web Push for those with a device (qa_notify.push): queued, never sent here
        jobs().push_after_broadcast(event.id)
    except Exception:
        db.session.rollback()
        log.warning("could not queue web pushes for outbox %s", event.id, exc_info=True)
    return added


def store_inbox_rows(outbox_id: int, recipients, batch: int | None = None) -> int:
    """Give each user ``recipients`` (a SELECT of user ids) selects an inbox row of ``outbox_id``.

    One ``INSERT ... SELECT`` per ``batch`` users (by id; ``INBOX_BATCH``), each committed; rows that exist
    already are left alone. Return how many rows were added.
    """
    now, batch = utcnow(), batch or INBOX_BATCH
    ids = recipients.subquery()
    after, added = 0, 0
    while True:
        upto = db.session.scalar(select(User.id).where(User.id > after).order_by(User.id).offset(batch - 1).limit(1))
        rows = select(ids.c.id, literal(outbox_id, Integer), literal(now, DateTime)).where(ids.c.id > after)
        if upto is not None:
            rows = rows.where(ids.c.id <= upto)
        result = db.session.execute(inbox_insert().from_select(["user_id", "outbox_id", "created_at"], rows))
        added += max(cast(CursorResult, result).rowcount or 0, 0)
        db.session.commit()
        if upto is None:
            return added
        after = upto
