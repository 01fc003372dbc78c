"""Which channels announce which event types to a user: the preferences matrix.

Rows are the preference keys (the site's own types, and ``producers`` for every type an
external producer names); columns are the channels: ``in_app`` (toasts and desktop
notifications in open tabs), ``push`` (web push, tabs closed) and ``email`` (away email
and digest). A type turned off on every channel is a ``MutedType`` row, which the fan-out
reads: no inbox row at all, as muting meant before channels existed. A type on somewhere
keeps everything in the inbox and badge; its channels turned off are ``ChannelMute`` rows,
read by each channel's sender (``events.announce``), and for ``in_app`` by the page (``silent``).
"""

from __future__ import annotations

import logging

from sqlalchemy import delete, select

from ..events import bus
from ..events.announce import CHANNELS, muted_types
from ..events.types import MUTEABLE_TYPES, PreferencesEvent
from ..extensions import db
from ..models import ChannelMute, MutedType

log = logging.getLogger(__name__)

Matrix = dict[str, dict[str, bool]]


def channel_matrix(user_id: int) -> Matrix:
    """Return ``{preference key: {channel: on?}}`` for every key and channel."""
    off_everywhere = set(db.session.scalars(select(MutedType.event_type).where(MutedType.user_id == user_id)))
    off = set(
        db.session.execute(select(ChannelMute.event_type, ChannelMute.channel).where(ChannelMute.user_id == user_id))
    )
    return {key: {ch: key not in off_everywhere and (key, ch) not in off for ch in CHANNELS} for key in MUTEABLE_TYPES}


def parse_matrix(data: object) -> Matrix:
    """Check a (partial) matrix from a client: ``{key: {channel: bool}}``; raise ValueError if it is not one."""
    if not isinstance(data, dict):
        raise ValueError("'channels' must be an object: {type: {channel: true|false}}")
    for key, row in data.items():
        if key not in MUTEABLE_TYPES:
            raise ValueError(f"unknown type {key!r}; choose from {', '.join(MUTEABLE_TYPES)}")
        if not isinstance(row, dict):
            raise ValueError(f"'channels.{key}' must be an object: {{channel: true|false}}")
        for channel, on in row.items():
            if channel not in CHANNELS:
                raise ValueError(f"unknown channel {channel!r}; choose from {', '.join(CHANNELS)}")
            if not isinstance(on, bool):
                raise ValueError(f"'channels.{key}.{channel}' must be true or false")
    return data


def set_channel_matrix(user_id: int, changes: Matrix) -> Matrix:
    """Apply ``changes`` (a partial matrix: the keys and channels given) and return the whole one.

    A key left off on every channel becomes muted (no inbox row); turning any channel of
    it back on brings its events back into the inbox. Open tabs and streams are told.
    """
    matrix = channel_matrix(user_id)
    before = (muted_keys(matrix), silent_keys(matrix))
    for key, row in parse_matrix(changes).items():
        matrix[key].update(row)
    db.session.execute(delete(MutedType).where(MutedType.user_id == user_id))
    db.session.execute(delete(ChannelMute).where(ChannelMute.user_id == user_id))
    for key, row in matrix.items():
        if not any(row.values()):
            db.session.add(MutedType(user_id=user_id, event_type=key))
        else:
            db.session.add_all(
                ChannelMute(user_id=user_id, event_type=key, channel=ch) for ch, on in row.items() if not on
            )
    db.session.commit()
    tell_open_tabs(user_id, matrix, before)
    return matrix


def muted_keys(matrix: Matrix) -> list[str]:
    """Return the keys off on every channel: their events never reach the inbox."""
    return sorted(key for key, row in matrix.items() if not any(row.values()))


def silent_keys(matrix: Matrix) -> list[str]:
    """Return the keys the page must not toast: in-app off (muted keys never reach it)."""
    return sorted(key for key, row in matrix.items() if not row["in_app"] and any(row.values()))


def silent_types(user_id: int) -> list[str]:
    """Return the keys the user's pages must not toast, from the rows (one small query)."""
    return sorted(
        db.session.scalars(
            select(ChannelMute.event_type).where(ChannelMute.user_id == user_id, ChannelMute.channel == "in_app")
        )
    )


def tell_open_tabs(user_id: int, matrix: Matrix, before: tuple[list[str], list[str]]) -> None:
    """Tell the user's web processes (their broadcast filter) and pages (their toasts) what
    changed since ``before`` (the muted and silent keys), and only that."""
    r = bus.redis_client_or_none()
    if r is None:
        return  # the pages read the settings again when they next load
    muted, silent = muted_keys(matrix), silent_keys(matrix)
    if muted != before[0]:
        bus.update_user_streams(r, user_id, muted)
    if silent != before[1]:
        try:
            bus.push_live(r, user_id, PreferencesEvent(silent=silent))
        except Exception:  # the next page load reads them
            log.warning("could not tell user %s's open tabs of their settings", user_id, exc_info=True)


def set_muted_types(user_id: int, types: list[str]) -> list[str]:
    """Turn ``types`` off on every channel and every other key back on where it was off
    everywhere (a key on somewhere keeps its channels); raise ValueError for an unknown key."""
    unknown = sorted(set(types) - set(MUTEABLE_TYPES))
    if unknown:
        raise ValueError(f"cannot mute {', '.join(unknown)}; choose from {', '.join(MUTEABLE_TYPES)}")
    matrix = channel_matrix(user_id)
    changes = {
        key: dict.fromkeys(CHANNELS, key not in types)
        for key, row in matrix.items()
        if key in types or not any(row.values())
    }
    set_channel_matrix(user_id, changes)
    return muted_types(user_id)
