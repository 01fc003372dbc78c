"""On which channels a recipient is told of an event: the preferences matrix as the senders read it.

An event in a user's inbox is announced on ``in_app`` (toasts and desktop notifications in
open tabs), ``push`` (web push, every tab closed) and ``email`` (away email and digest),
unless the user turned that channel off for the event's preference key (``ChannelMute``).
A key off on every channel never reaches the inbox (``MutedType``, read by ``recipients``).
Each sender asks here, once per batch of recipients; ``preferences.channels`` edits the rows.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import case, exists, select

from ..extensions import db
from ..models import ChannelMute, MutedType, Notification, OutboxEvent
from .types import BUILTIN_TYPES, PRODUCER_TYPES, preference_key

CHANNELS = ("in_app", "push", "email")


def allowed(user_ids: Iterable[int], event_type: str, channel: str) -> set[int]:
    """Return those of ``user_ids`` who want ``event_type`` announced on ``channel``: two small queries."""
    ids = set(user_ids)
    if not ids:
        return set()
    key = preference_key(event_type)
    off = db.session.scalars(
        select(ChannelMute.user_id).where(
            ChannelMute.user_id.in_(ids), ChannelMute.event_type == key, ChannelMute.channel == channel
        )
    )
    muted = db.session.scalars(select(MutedType.user_id).where(MutedType.user_id.in_(ids), MutedType.event_type == key))
    return ids - set(off) - set(muted)


def muted_types(user_id: int) -> list[str]:
    """Return the preference keys the user turned off on every channel (no inbox row for them)."""
    return sorted(db.session.scalars(select(MutedType.event_type).where(MutedType.user_id == user_id)))


def notification_announced_on(channel: str):
    """Return a SQL condition on ``Notification`` rows: their type is on for ``channel`` for their user.

    ``preference_key`` in SQL, correlated to the notification, so it also works in an UPDATE.
    """
    key = case((OutboxEvent.event_type.in_(BUILTIN_TYPES), OutboxEvent.event_type), else_=PRODUCER_TYPES)
    return ~exists().where(
        OutboxEvent.id == Notification.outbox_id,
        ChannelMute.user_id == Notification.user_id,
        ChannelMute.channel == channel,
        ChannelMute.event_type == key,
    )
