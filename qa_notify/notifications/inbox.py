"""The persistent inbox: list, count and mark read a user's notifications."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import String, cast, func, select, update

from ..events import bus
from ..events.types import ReadEvent
from ..extensions import db
from ..models import Notification, OutboxEvent, utcnow

log = logging.getLogger(__name__)
MAX_PAGE = 100


# An event's group: its key, or (a group of its own) its id, which can never look like a key.
GROUP = func.coalesce(OutboxEvent.group_key, cast(OutboxEvent.id, String))
ACTORS_SHOWN = 3


@dataclass
class Group:
    """One inbox item: the notifications of one group that are all unread, or were read together.

    ``latest`` is the newest part (its id is the item's id; reading it reads every part).
    """

    latest: Notification
    count: int
    actor_count: int
    actors: list[str]
    first_at: datetime

    @property
    def id(self) -> int:
        return self.latest.id

    @property
    def event_type(self) -> str:
        return self.latest.event_type

    @property
    def payload(self) -> dict:
        return self.latest.payload

    @property
    def read(self) -> bool:
        return self.latest.read_at is not None

    @property
    def key(self) -> str:
        return self.latest.event.group_key or str(self.latest.outbox_id)

    def to_dict(self) -> dict:
        """Return the JSON form of the inbox item."""
        return {
            **self.latest.to_dict(),
            "count": self.count,
            "actors": self.actors,
            "actor_count": self.actor_count,
            "latest_at": self.latest.created_at.isoformat() + "Z",
            "first_at": self.first_at.isoformat() + "Z",
            "group": self.latest.event.group_key,
        }


def in_group(user_id: int, key: str, read_at: datetime | None):
    """Return the WHERE clause selecting one item's parts: its group's, unread or read together at ``read_at``."""
    same_read = Notification.read_at.is_(None) if read_at is None else Notification.read_at == read_at
    return (Notification.user_id == user_id, key == GROUP, same_read)


def list_groups(user_id: int, before: int | None = None, limit: int = 20, where: Iterable = ()) -> list[Group]:
    """Return the user's inbox items newest first (older than item id ``before`` if given).

    Grouping happens here, when the inbox is read, so the fan-out writes one plain row per
    recipient and never reads or updates a group: unread parts of one key are one item;
    read parts are one item per (key, moment they were read together). ``where`` narrows
    the parts (the triage filters, ``triage.InboxFilter.where``); without it, archived
    items are left out.
    """
    where = list(where) or [Notification.archived_at.is_(None)]
    latest = func.max(Notification.id)
    query = (
        select(
            GROUP.label("key"),
            Notification.read_at,
            latest.label("latest"),
            func.count().label("parts"),
            func.count(func.distinct(OutboxEvent.actor_id)).label("actors"),
            func.min(Notification.created_at).label("first_at"),
        )
        .join(OutboxEvent, Notification.outbox_id == OutboxEvent.id)
        .where(Notification.user_id == user_id, *where)
        .group_by(GROUP, Notification.read_at)
        .order_by(latest.desc())
        .limit(max(1, min(limit, MAX_PAGE)))
    )
    if before is not None:
        query = query.having(latest < before)
    rows = db.session.execute(query).all()
    newest = {
        n.id: n for n in db.session.scalars(select(Notification).where(Notification.id.in_([r.latest for r in rows])))
    }
    groups = []
    for row in rows:
        part = newest[row.latest]
        actors = _actor_names(user_id, row.key, row.read_at) if row.parts > 1 else _actor_names_of([part.payload])
        groups.append(Group(part, row.parts, max(row.actors, len(actors)), actors, row.first_at))
    return groups


def _actor_names(user_id: int, key: str, read_at: datetime | None) -> list[str]:
    """Return the newest distinct actors' names of one group (from its newest parts)."""
    payloads = db.session.scalars(
        select(OutboxEvent.payload)
        .join(Notification, Notification.outbox_id == OutboxEvent.id)
        .where(*in_group(user_id, key, read_at))
        .order_by(Notification.id.desc())
        .limit(20)
    )
    return _actor_names_of(payloads)


def _actor_names_of(payloads) -> list[str]:
    names: list[str] = []
    for payload in payloads:
        name = payload.get("author") if isinstance(payload, dict) else None
        if isinstance(name, str) and name and name not in names:
            names.append(name)
            if len(names) == ACTORS_SHOWN:
                break
    return names


def unread_count(user_id: int) -> int:
    """Return how many inbox items (groups) of the user are unread."""
    query = (
        select(func.count(func.distinct(GROUP)))
        .select_from(Notification)
        .join(OutboxEvent, Notification.outbox_id == OutboxEvent.id)
        .where(Notification.user_id == user_id, Notification.read_at.is_(None))
    )
    return int(db.session.scalar(query))


MAX_READ_IDS_TOLD = 1000


def mark_read(user_id: int, ids: list[int] | None) -> tuple[list[int], int]:
    """Mark the given inbox items (every part of their groups), or all, read; tell the other tabs.

    Return the notification ids that changed and the new unread count.
    """
    where = [Notification.user_id == user_id, Notification.read_at.is_(None)]
    if ids is not None:
        keys = list(
            db.session.scalars(
                select(GROUP).distinct().select_from(Notification)
                .join(OutboxEvent, Notification.outbox_id == OutboxEvent.id)
                .where(*where, Notification.id.in_(ids))
            )
        )  # fmt: skip
        if not keys:
            return [], unread_count(user_id)
        where.append(GROUP.in_(keys))
    changed = list(
        db.session.scalars(
            select(Notification.id).join(OutboxEvent, Notification.outbox_id == OutboxEvent.id)
            .where(*where).order_by(Notification.id.desc())
        )
    )  # fmt: skip
    if changed:
        now = utcnow()
        for start in range(0, len(changed), 500):
            db.session.execute(
                update(Notification).where(Notification.id.in_(changed[start : start + 500])).values(read_at=now)
            )
        db.session.commit()
    count = unread_count(user_id)
    told = changed[:MAX_READ_IDS_TOLD] if ids is not None else []
    tell_tabs(user_id, ReadEvent(ids=told, all=ids is None, unread_count=count))
    return changed, count


def tell_tabs(user_id: int, event: ReadEvent) -> None:
    """Push a read-state change to every open stream of the user (their badges and inbox pages follow)."""
    r = bus.redis_client_or_none()
    if r is None:
        return
    try:
        bus.push_live(r, user_id, event)
    except Exception:  # the badge in other tabs catches up on their next fetch
        log.warning("could not tell user %s's other tabs about read state", user_id, exc_info=True)
