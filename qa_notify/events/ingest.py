"""External producers: any service, in any language, can notify users through Redis.

Append an entry with one field, ``envelope``, holding JSON, to the ``qa:ingest`` stream::

    redis-cli XADD qa:ingest '*' envelope '{"user": "alice", "type": "deploy", "payload": {"text": "v2 is out"}}'

``user`` (a username or id) or ``role`` (``user``, ``moderator``, ``admin`` or ``all``)
picks the audience. Valid envelopes become events like any other (inbox, replay, live),
stamped with a fixed ``source`` the page shows. Every entry is settled on its own: whatever
is wrong with one (bytes that are not UTF-8, absurd nesting or numbers, a lone surrogate,
a type or field it may not use) sends that one to ``qa:ingest:dead`` with the reason, and
the entries beside it are delivered. An entry is accepted at most once (its stream id is
the event's unique ``source_key``), even when a worker dies before acknowledging it.
"""

from __future__ import annotations

import logging
import os
import socket

import redis
from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from .. import strictjson
from ..extensions import db
from ..models import ROLES, OutboxEvent, User, valid_id
from . import bus, channels
from .audiences import Audience, Everyone, Users
from .outbox import emit
from .types import BUILTIN_TYPES, EVENT_TYPE_PATTERN, SERVER_FIELDS, STREAM_TYPES, CustomEvent

log = logging.getLogger(__name__)
MAX_ENVELOPE_BYTES = 16 * 1024
READ_BATCH = 100
RECLAIM_IDLE_MS = 60_000
DEAD_LETTER_MAXLEN = 10_000
# A Redis or database outage: stop this run and leave the entries pending, to be read again.
OUTAGES = (redis.ConnectionError, redis.TimeoutError, OperationalError)


class EnvelopeError(ValueError):
    """Raised for an envelope that cannot be delivered; the message says why."""


def parse_envelope(raw: bytes | str | None) -> tuple[CustomEvent, Audience]:
    """Validate one envelope (bytes as read from Redis); return the event and its audience."""
    if raw is None:
        raise EnvelopeError("entry has no 'envelope' field")
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))
    if size > MAX_ENVELOPE_BYTES:
        raise EnvelopeError(f"envelope is larger than {MAX_ENVELOPE_BYTES} bytes")
    try:
        env = strictjson.loads(raw)
    except strictjson.StrictJSONError as exc:
        raise EnvelopeError(f"envelope: {exc}") from None
    if not isinstance(env, dict):
        raise EnvelopeError("envelope must be a JSON object")
    etype, payload = env.get("type"), env.get("payload", {})
    _check_type(etype)
    if not isinstance(payload, dict):
        raise EnvelopeError("'payload' must be a JSON object")
    taken = sorted(set(SERVER_FIELDS) & set(payload))
    if taken:
        raise EnvelopeError(f"'payload' may not set the server's own fields: {', '.join(taken)}")
    source = current_app.config["INGEST_SOURCE"]
    return CustomEvent(name=etype, data=payload, source=source), _audience(env)


def _check_type(etype: object) -> None:
    if not isinstance(etype, str) or not EVENT_TYPE_PATTERN.match(etype):
        raise EnvelopeError("'type' must match [a-z][a-z0-9_]{0,31}")
    if etype in STREAM_TYPES:
        raise EnvelopeError(f"'type' {etype!r} is reserved for the stream itself")
    if etype in BUILTIN_TYPES and etype not in current_app.config["INGEST_BUILTIN_TYPES"]:
        raise EnvelopeError(f"'type' {etype!r} is the site's own; list it in INGEST_BUILTIN_TYPES to allow it")


def _audience(env: dict) -> Audience:
    has_user, has_role = "user" in env, "role" in env
    if has_user == has_role:
        raise EnvelopeError("give exactly one of 'user' or 'role'")
    if has_role:
        role = env["role"]
        if role == "all":
            return Everyone()
        if role not in ROLES:
            raise EnvelopeError(f"'role' must be one of {', '.join(ROLES)} or all")
        return Everyone(role)
    who = env["user"]
    if isinstance(who, str) and 0 < len(who) <= 40 and "\x00" not in who:
        user_id = db.session.scalar(select(User.id).where(User.username == who))
    elif valid_id(who):
        user_id = db.session.scalar(select(User.id).where(User.id == who))
    elif isinstance(who, str | int) and not isinstance(who, bool):
        user_id = None  # cannot name anyone: too long, out of range
    else:
        raise EnvelopeError("'user' must be a username or a user id")
    if user_id is None:
        raise EnvelopeError(f"no such user: {str(who)[:60]!r}")
    return Users([user_id])


def _consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _ensure_group(r: redis.Redis) -> None:
    try:
        r.xgroup_create(channels.INGEST_STREAM, channels.INGEST_GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def ingest_pending() -> int:
    """Settle new and abandoned entries of the ingest stream; return how many became events.

    Entries are read as bytes and decoded one by one, so nothing about one entry can stop
    the others. A Redis or database outage ends the run early; the unsettled entries stay
    pending and are read again (after ``RECLAIM_IDLE_MS``), at most
    ``INGEST_MAX_DELIVERIES`` times before they are dead-lettered.
    """
    r, raw = bus.redis_client(), bus.redis_bytes_client()
    # Ask the database first: while it is away nothing is claimed, so a long outage does
    # not count against the entries' INGEST_MAX_DELIVERIES.
    db.session.execute(select(1))
    _ensure_group(r)
    consumer = _consumer_name()
    _, claimed, *_ = raw.xautoclaim(
        channels.INGEST_STREAM, channels.INGEST_GROUP, consumer, RECLAIM_IDLE_MS, count=READ_BATCH
    )
    worn_out = _worn_out(r, [entry_id for entry_id, _ in claimed])
    fresh = raw.xreadgroup(channels.INGEST_GROUP, consumer, {channels.INGEST_STREAM: ">"}, count=READ_BATCH)
    entries = list(claimed) + [e for _, stream_entries in fresh for e in stream_entries]
    accepted = 0
    for entry_id, fields in entries:
        entry_id = entry_id.decode()
        if entry_id in worn_out:
            _dead_letter(r, entry_id, fields, f"read {worn_out[entry_id]} times without being settled")
        else:
            accepted += _settle(r, entry_id, fields)
    return accepted


def _worn_out(r: redis.Redis, entry_ids: list[bytes]) -> dict[str, int]:
    """Return those reclaimed entries that were read INGEST_MAX_DELIVERIES times before this one."""
    limit = current_app.config["INGEST_MAX_DELIVERIES"]
    worn = {}
    for entry_id in entry_ids:
        pending = r.xpending_range(channels.INGEST_STREAM, channels.INGEST_GROUP, entry_id, entry_id, 1)
        if pending and pending[0]["times_delivered"] > limit:
            worn[pending[0]["message_id"]] = limit
    return worn


def _settle(r: redis.Redis, entry_id: str, fields: dict | None) -> int:
    """Turn one entry into an event or a dead letter, then acknowledge it; return 1 if accepted."""
    if fields is None:  # deleted from the stream while pending
        r.xack(channels.INGEST_STREAM, channels.INGEST_GROUP, entry_id)
        return 0
    source_key = f"ingest:{entry_id}"
    try:
        event, audience = parse_envelope(fields.get(b"envelope"))
        if db.session.scalar(select(OutboxEvent.id).where(OutboxEvent.source_key == source_key)) is None:
            emit(event, audience, source_key=source_key)
            db.session.commit()
    except OUTAGES:
        db.session.rollback()
        raise
    except EnvelopeError as exc:
        db.session.rollback()
        _dead_letter(r, entry_id, fields, str(exc))
        return 0
    except Exception as exc:  # anything else about this entry: never let it strand the others
        db.session.rollback()
        log.exception("ingest entry %s could not be accepted", entry_id)
        _dead_letter(r, entry_id, fields, f"could not be accepted: {type(exc).__name__}: {exc}"[:500])
        return 0
    r.xack(channels.INGEST_STREAM, channels.INGEST_GROUP, entry_id)
    return 1


def _dead_letter(r: redis.Redis, entry_id: str, fields: dict | None, reason: str) -> None:
    """Copy an entry to the dead-letter stream with the reason, and acknowledge it.

    The envelope is copied as text, bytes that are not UTF-8 written as ``\\xNN``, so any
    client can read the dead-letter stream.
    """
    envelope = (fields or {}).get(b"envelope", b"")[:MAX_ENVELOPE_BYTES].decode("utf-8", "backslashreplace")
    with r.pipeline(transaction=False) as pipe:
        pipe.xadd(
            channels.DEAD_LETTER_STREAM,
            {"reason": reason, "entry_id": entry_id, "envelope": envelope},
            maxlen=DEAD_LETTER_MAXLEN,
            approximate=True,
        )
        pipe.xack(channels.INGEST_STREAM, channels.INGEST_GROUP, entry_id)
        pipe.execute()
    log.warning("ingest entry %s dead-lettered: %s", entry_id, reason)
