"""Inbox triage: filter the inbox, mark items unread, archive them, read a question's notifications on viewing it.

Every action takes inbox *items* (an item's id is its newest part's id) and acts on every
part of the item, as ``inbox.mark_read`` does, so an item never splits in two. Rules:

- Archived ("done") items leave the default view; the ``archived`` filter shows them.
  Archiving an unread item reads it too, so an archived item is always read and the badge
  never counts something the inbox does not show.
- Mark unread sets ``read_at`` back to NULL (and un-archives): the item joins the unread
  parts of its group, if any. Email (``mail.scan``) never covers a notification twice,
  the digest only what arrived since the last one, and the away email only what arrived
  since the user was last seen with a page open, so marking unread from a page does not
  get an old notification emailed late.
- Every change that moves the badge is pushed to the user's open streams as a ``read``
  event (``unread: true`` for mark unread), the same path as mark read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from flask_babel import gettext as _
from sqlalchemy import ColumnElement, func, select, update

from ..events.types import EVENT_TYPE_PATTERN, ReadEvent
from ..extensions import db
from ..models import Notification, OutboxEvent, utcnow, valid_id
from .inbox import GROUP, MAX_READ_IDS_TOLD, in_group, tell_tabs, unread_count

FLAG_VALUES = {"1": True, "true": True, "on": True, "0": False, "false": False, "": False}
UPDATE_CHUNK = 500


@dataclass(frozen=True)
class InboxFilter:
    """Which inbox items to show: ``?unread=1&type=new_answers&question=<id>&archived=1``, combinable."""

    unread: bool = False
    event_type: str | None = None
    question_id: int | None = None
    archived: bool = False

    def where(self) -> list[ColumnElement[bool]]:
        """Return the conditions on an item's parts (a notification joined to its event)."""
        archived = Notification.archived_at
        conditions: list[ColumnElement[bool]] = [archived.is_not(None) if self.archived else archived.is_(None)]
        if self.unread:
            conditions.append(Notification.read_at.is_(None))
        if self.event_type is not None:
            conditions.append(OutboxEvent.event_type == self.event_type)
        if self.question_id is not None:
            conditions.append(OutboxEvent.question_id == self.question_id)
        return conditions

    def args(self) -> dict:
        """Return the query arguments that give this filter again (for pager and form links)."""
        args: dict = {"unread": 1 if self.unread else None, "type": self.event_type}
        args.update(question=self.question_id, archived=1 if self.archived else None)
        return {name: value for name, value in args.items() if value is not None}

    @property
    def active(self) -> bool:
        """True if anything is filtered."""
        return self != InboxFilter()


def parse_filter(args: Mapping[str, str]) -> tuple[InboxFilter, list[str]]:
    """Return the filter the query ``args`` ask for and a message per bad value (that value is ignored)."""
    errors: list[str] = []
    flags = {}
    for name in ("unread", "archived"):
        raw = args.get(name)
        flags[name] = FLAG_VALUES.get(raw.strip().lower()) if raw is not None else False
        if flags[name] is None:
            errors.append(_("'%(name)s' must be 1 or 0", name=name))
    event_type = args.get("type") or None
    if event_type is not None and not EVENT_TYPE_PATTERN.match(event_type):
        errors.append(_("'type' must be an event type such as new_answers"))
        event_type = None
    question_id = _question_arg(args.get("question"))
    if question_id == 0:
        errors.append(_("'question' must be a question id"))
    found = InboxFilter(bool(flags["unread"]), event_type, question_id or None, bool(flags["archived"]))
    return found, errors


def _question_arg(raw: str | None) -> int | None:
    """The question id in ``raw``; None if absent, 0 if it cannot be one."""
    if raw in (None, ""):
        return None
    value = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 10 else 0
    return value if valid_id(value) else 0


def _items_of(user_id: int, ids: list[int], *where: ColumnElement[bool]) -> list[tuple[str, datetime | None]]:
    """Return the (group key, read_at) of the items with these ids: what identifies every part of each."""
    query = (
        select(GROUP, Notification.read_at).distinct().select_from(Notification)
        .join(OutboxEvent, Notification.outbox_id == OutboxEvent.id)
        .where(Notification.user_id == user_id, Notification.id.in_(ids), *where)
    )  # fmt: skip
    return [(row[0], row[1]) for row in db.session.execute(query)]


def _parts_of(user_id: int, items: list[tuple[str, datetime | None]], *where: ColumnElement[bool]) -> list[int]:
    """Return the notification ids of every part of these items, newest first."""
    parts: set[int] = set()
    for key, read_at in items:
        query = (
            select(Notification.id).join(OutboxEvent, Notification.outbox_id == OutboxEvent.id)
            .where(*in_group(user_id, key, read_at), *where)
        )  # fmt: skip
        parts.update(db.session.scalars(query))
    return sorted(parts, reverse=True)


def _update(ids: list[int], **values: object) -> None:
    for start in range(0, len(ids), UPDATE_CHUNK):
        db.session.execute(
            update(Notification).where(Notification.id.in_(ids[start : start + UPDATE_CHUNK])).values(**values)
        )


def mark_unread(user_id: int, ids: list[int]) -> tuple[list[int], int]:
    """Mark these read inbox items (every part) unread again, out of the archive; tell the other tabs.

    Return the notification ids that changed and the new unread count.
    """
    changed = _parts_of(user_id, _items_of(user_id, ids, Notification.read_at.is_not(None)))
    if not changed:
        return [], unread_count(user_id)
    _update(changed, read_at=None, archived_at=None)
    db.session.commit()
    count = unread_count(user_id)
    tell_tabs(user_id, ReadEvent(ids=changed[:MAX_READ_IDS_TOLD], all=False, unread_count=count, unread=True))
    return changed, count


def archive(user_id: int, ids: list[int]) -> tuple[list[int], int]:
    """Archive these inbox items (every part), reading the unread ones; tell the other tabs.

    Return the notification ids that changed and the new unread count.
    """
    not_archived = Notification.archived_at.is_(None)
    changed = _parts_of(user_id, _items_of(user_id, ids, not_archived), not_archived)
    if not changed:
        return [], unread_count(user_id)
    now = utcnow()
    _update(changed, archived_at=now, read_at=func.coalesce(Notification.read_at, now))
    db.session.commit()
    count = unread_count(user_id)
    tell_tabs(user_id, ReadEvent(ids=changed[:MAX_READ_IDS_TOLD], all=False, unread_count=count))
    return changed, count


def read_question(user_id: int, question_id: int) -> list[int]:
    """Mark read the user's unread notifications about one question (one UPDATE); tell every open tab.

    Called when the user views the question's page, as GitHub and Stack Overflow do.
    Return the notification ids that changed (none: nothing is written or pushed).
    """
    about = select(OutboxEvent.id).where(OutboxEvent.question_id == question_id)
    statement = (
        update(Notification)
        .where(Notification.user_id == user_id, Notification.read_at.is_(None), Notification.outbox_id.in_(about))
        .values(read_at=utcnow())
        .returning(Notification.id)
        .execution_options(synchronize_session=False)
    )
    changed = sorted(db.session.scalars(statement), reverse=True)
    if not changed:
        db.session.rollback()
        return []
    db.session.commit()
    tell_tabs(user_id, ReadEvent(ids=changed[:MAX_READ_IDS_TOLD], all=False, unread_count=unread_count(user_id)))
    return changed
