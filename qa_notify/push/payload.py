"""What one push says: the notification group's wording and count, as JSON small enough to send.

``{title, body, url, tag, count, type}``: the title and body are the inbox item's wording
(``notifications.wording``, the one server-side wording), in the user's language
(``i18n.locale_of``, as their emails), for the user's unread parts of
the event's group, so ten answers read "bob and 4 others answered ..." with count 10; the
tag is the group (the service worker shows one notification per tag and replaces it).
An encrypted push must stay under 4,096 bytes: the body, then the title, are cut to fit.
"""

from __future__ import annotations

import json

from flask_babel import force_locale, ngettext
from sqlalchemy import func, select

from ..extensions import db
from ..i18n import locale_of
from ..models import Notification, OutboxEvent, User
from ..notifications.inbox import GROUP
from ..notifications.wording import describe

# 4096 bytes encrypted = record header (86) + tag (16) + padding delimiter (1) + plaintext.
MAX_PLAINTEXT = 4096 - 86 - 16 - 1
ACTORS_SHOWN = 3


def group_of(event: OutboxEvent) -> str:
    """Return the event's group key: its ``group_key``, or its id (a group of its own)."""
    return event.group_key or str(event.id)


def build(user_id: int, event: OutboxEvent) -> dict | None:
    """Return the push for ``user_id`` of ``event``'s group, worded from its newest unread part
    and counting them all; None if the user read the group already (nothing to tell)."""
    key = group_of(event)
    # The group's parts as the inbox shows its item: unread, not archived.
    parts = (
        Notification.user_id == user_id,
        Notification.read_at.is_(None),
        Notification.archived_at.is_(None),
        GROUP.in_([key]),
    )
    count, actor_count = db.session.execute(
        select(func.count(), func.count(func.distinct(OutboxEvent.actor_id)))
        .select_from(Notification)
        .join(OutboxEvent, Notification.outbox_id == OutboxEvent.id)
        .where(*parts)
    ).one()
    if not count:
        return None
    payloads = list(
        db.session.scalars(
            select(OutboxEvent.payload)
            .join(Notification, Notification.outbox_id == OutboxEvent.id)
            .where(*parts)
            .order_by(Notification.id.desc())
            .limit(20)
        )
    )
    actors: list[str] = []
    for payload in payloads:
        name = payload.get("author") if isinstance(payload, dict) else None
        if isinstance(name, str) and name and name not in actors and len(actors) < ACTORS_SHOWN:
            actors.append(name)
    newest = payloads[0] if payloads else event.payload
    with force_locale(locale_of(db.session.get(User, user_id))):  # the reader's language, as emails
        wording = describe(event.event_type, newest, int(count), actors or None, int(actor_count))
    return {
        "title": wording.headline,
        "body": wording.detail,
        "url": wording.url or "/inbox",
        "tag": key,
        "count": int(count),
        "type": event.event_type,
    }


def summary(user_id: int, count: int) -> dict:
    """Return the push that ends a quiet period: how many notifications came meanwhile."""
    with force_locale(locale_of(db.session.get(User, user_id))):
        title = ngettext(
            "%(num)d update while notifications were paused", "%(num)d updates while notifications were paused", count
        )
    return {"title": title, "body": "", "url": "/inbox", "tag": "quiet-summary", "count": count, "type": "summary"}


def encode(push: dict, limit: int = MAX_PLAINTEXT) -> bytes:
    """Return ``push`` as UTF-8 JSON of at most ``limit`` bytes: the body, then the title, trimmed."""
    push = dict(push)
    data = _dumps(push)
    for name in ("body", "title"):
        while len(data) > limit and push[name]:
            over = len(data) - limit
            text = push[name]
            # Cut a little more than the overshoot (escapes can take 6 bytes a character).
            keep = max(0, len(text) - max(over // 2, 1) - 1)
            push[name] = text[:keep].rstrip() + "\u2026" if keep else ""
            data = _dumps(push)
    return data[:limit] if len(data) > limit else data


def _dumps(push: dict) -> bytes:
    return json.dumps(push, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
