"""External producers: any service, in any language, can notify users through Redis.

Append an entry with one field, ``envelope``, holding JSON, to the ``qa:ingest`` stream::

    redis-cli XADD qa:ingest '*' envelope '{"user": "alice", "type": "deploy", "payload": {"text": "v2 is out"}}'

``user`` (a username or id) or ``role`` (``user``, ``moderator``, ``admin`` or ``all``)
picks the audience. Valid envelopes become events like any other (inbox, replay, live);
invalid ones go to ``qa:ingest:dead`` with the reason, and never crash a worker.
"""

from __future__ import annotations

import json
import logging
import os
import socket

import redis
from sqlalchemy import select

from ..extensions import db
from ..models import ROLES, User
from . import bus, channels
from .outbox import emit
from .types import EVENT_TYPE_PATTERN, RESYNC, SERVER_CLOSED, CustomEvent, ReadEvent

log = logging.getLogger(__name__)
MAX_ENVELOPE_BYTES = 16 * 1024
RESERVED_TYPES = {RESYNC, SERVER_CLOSED, ReadEvent.type}
READ_BATCH = 100
RECLAIM_IDLE_MS = 60_000


class EnvelopeError(ValueError):
    """Raised for an envelope that cannot be delivered; the message says why."""


def parse_envelope(raw: str | None) -> tuple[CustomEvent, dict]:
    """Validate one envelope; return the event and its audience, or raise EnvelopeError."""
    if raw is None:
        raise EnvelopeError("entry has no 'envelope' field")
    if len(raw.encode("utf-8")) > MAX_ENVELOPE_BYTES:
        raise EnvelopeError(f"envelope is larger than {MAX_ENVELOPE_BYTES} bytes")
    try:
        env = json.loads(raw)
    except ValueError as exc:
        raise EnvelopeError(f"envelope is not JSON: {exc}") from None
    if not isinstance(env, dict):
        raise EnvelopeError("envelope must be a JSON object")
    etype, payload = env.get("type"), env.get("payload", {})
    if not isinstance(etype, str) or not EVENT_TYPE_PATTERN.match(etype):
        raise EnvelopeError("'type' must match [a-z][a-z0-9_]{0,31}")
    if etype in RESERVED_TYPES:
        raise EnvelopeError(f"'type' {etype!r} is reserved")
    if not isinstance(payload, dict):
        raise EnvelopeError("'payload' must be a JSON object")
    return CustomEvent(name=etype, data=payload), _audience(env)


def _audience(env: dict) -> dict:
    has_user, has_role = "user" in env, "role" in env
    if has_user == has_role:
        raise EnvelopeError("give exactly one of 'user' or 'role'")
    if has_role:
        role = env["role"]
        if role == "all":
            return {"kind": "everyone"}
        if role not in ROLES:
            raise EnvelopeError(f"'role' must be one of {', '.join(ROLES)} or all")
        return {"kind": "everyone", "role": role}
    who = env["user"]
    if isinstance(who, bool) or not isinstance(who, (str, int)):
        raise EnvelopeError("'user' must be a username or a user id")
    column = User.id if isinstance(who, int) else User.username
    user_id = db.session.scalar(select(User.id).where(column == who))
    if user_id is None:
        raise EnvelopeError(f"no such user: {who!r}")
    return {"kind": "users", "user_ids": [user_id]}


def _consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _ensure_group(r: redis.Redis) -> None:
    try:
        r.xgroup_create(channels.INGEST_STREAM, channels.INGEST_GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def ingest_pending() -> int:
    """Read new and abandoned envelopes from the ingest stream; return how many were accepted."""
    r = bus.redis_client()
    _ensure_group(r)
    consumer = _consumer_name()
    _, claimed, *_ = r.xautoclaim(
        channels.INGEST_STREAM, channels.INGEST_GROUP, consumer, RECLAIM_IDLE_MS, count=READ_BATCH
    )
    fresh = r.xreadgroup(channels.INGEST_GROUP, consumer, {channels.INGEST_STREAM: ">"}, count=READ_BATCH)
    entries = list(claimed) + [e for _, stream_entries in fresh for e in stream_entries]
    accepted = 0
    for entry_id, fields in entries:
        if fields is None:  # deleted while pending
            r.xack(channels.INGEST_STREAM, channels.INGEST_GROUP, entry_id)
            continue
        accepted += _accept(r, entry_id, fields)
    return accepted


def _accept(r: redis.Redis, entry_id: str, fields: dict) -> int:
    raw = fields.get("envelope")
    try:
        event, audience = parse_envelope(raw)
        emit(event, audience)
        db.session.commit()
        ok = 1
    except EnvelopeError as exc:
        db.session.rollback()
        r.xadd(
            channels.DEAD_LETTER_STREAM,
            {
                "reason": str(exc),
                "entry_id": entry_id,
                "envelope": (raw or "")[:MAX_ENVELOPE_BYTES],
            },
            maxlen=10_000,
            approximate=True,
        )
        log.warning("ingest entry %s rejected: %s", entry_id, exc)
        ok = 0
    r.xack(channels.INGEST_STREAM, channels.INGEST_GROUP, entry_id)
    return ok
