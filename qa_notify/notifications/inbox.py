"""The persistent inbox: list, count and mark read a user's notifications; muting preferences."""

from __future__ import annotations

import logging

from sqlalchemy import delete, func, select, update

from ..events import bus
from ..events.types import MUTEABLE_TYPES, ReadEvent
from ..extensions import db
from ..models import MutedType, Notification, utcnow

log = logging.getLogger(__name__)
MAX_PAGE = 100


def list_notifications(user_id: int, before: int | None = None, limit: int = 20) -> list[Notification]:
    """Return the user's notifications newest first, older than id ``before`` if given."""
    query = select(Notification).where(Notification.user_id == user_id)
    if before is not None:
        query = query.where(Notification.id < before)
    return list(db.session.scalars(query.order_by(Notification.id.desc()).limit(max(1, min(limit, MAX_PAGE)))))


def unread_count(user_id: int) -> int:
    """Return how many of the user's notifications are unread."""
    query = (
        select(func.count())
        .select_from(Notification)
        .where(Notification.user_id == user_id, Notification.read_at.is_(None))
    )
    return int(db.session.scalar(query))


def mark_read(user_id: int, ids: list[int] | None) -> tuple[list[int], int]:
    """Mark the given notifications (or all, with ``ids`` None) read; tell the user's other tabs.

    Return the ids that changed and the new unread count.
    """
    where = [Notification.user_id == user_id, Notification.read_at.is_(None)]
    if ids is not None:
        where.append(Notification.id.in_(ids))
    changed = list(db.session.scalars(select(Notification.id).where(*where)))
    if changed:
        db.session.execute(update(Notification).where(*where).values(read_at=utcnow()))
        db.session.commit()
    count = unread_count(user_id)
    r = bus.redis_client_or_none()
    if r is not None:
        try:
            bus.push_live(
                r,
                user_id,
                ReadEvent(ids=changed if ids is not None else [], all=ids is None, unread_count=count),
            )
        except Exception:  # the badge in other tabs catches up on their next fetch
            log.warning("could not tell user %s's other tabs about read state", user_id, exc_info=True)
    return changed, count


def muted_types(user_id: int) -> list[str]:
    """Return the event types the user muted."""
    return sorted(db.session.scalars(select(MutedType.event_type).where(MutedType.user_id == user_id)))


def set_muted_types(user_id: int, types: list[str]) -> list[str]:
    """Replace the user's muted types; raise ValueError for a type that cannot be muted."""
    unknown = sorted(set(types) - set(MUTEABLE_TYPES))
    if unknown:
        raise ValueError(f"cannot mute {', '.join(unknown)}; choose from {', '.join(MUTEABLE_TYPES)}")
    db.session.execute(delete(MutedType).where(MutedType.user_id == user_id))
    db.session.add_all(MutedType(user_id=user_id, event_type=t) for t in sorted(set(types)))
    db.session.commit()
    return muted_types(user_id)
