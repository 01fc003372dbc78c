"""Push subscriptions: check what a browser posted, store it per user and device, list and remove.

The server will POST to the endpoint a user gave it, so a subscription is refused (422)
unless its endpoint is ``https`` on a host in ``PUSH_ALLOWED_HOSTS`` (no user name, no
password) and its keys are what a browser makes: a P-256 point (65 bytes) and a 16-byte
auth secret. A user keeps at most ``PUSH_MAX_SUBSCRIPTIONS``; a new one beyond that
replaces the oldest. An endpoint is one browser: posted again it is updated, and posted by
another user it moves to them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec
from flask import current_app
from sqlalchemy import Select, delete, select

from ..events.recipients import among_bound, among_params
from ..extensions import db
from ..models import PushSubscription, utcnow
from .vapid import b64url_decode

MAX_ENDPOINT = 2048
MAX_USER_AGENT = 300


class InvalidSubscription(ValueError):
    """What a browser posted is not a subscription the site will push to."""


@dataclass(frozen=True)
class Parsed:
    """A checked subscription: where to push, and the browser's keys (base64url)."""

    endpoint: str
    p256dh: str
    auth: str


def host_allowed(host: str, allowed: tuple[str, ...] | list[str]) -> bool:
    """True if ``host`` is one of ``allowed`` or, for an entry ``*.example.com``, below it."""
    host = host.lower().rstrip(".")
    for entry in allowed:
        entry = entry.lower()
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                return True
        elif host == entry:
            return True
    return False


def check_endpoint(endpoint: object) -> str:
    """Return ``endpoint`` if the site may POST to it; raise InvalidSubscription otherwise."""
    if not isinstance(endpoint, str) or not endpoint or len(endpoint) > MAX_ENDPOINT:
        raise InvalidSubscription(f"'endpoint' must be a URL of at most {MAX_ENDPOINT} characters")
    try:
        parts = urlsplit(endpoint)
        host = parts.hostname or ""
        parts.port  # noqa: B018  (raises ValueError on a port that is not a number)
    except ValueError:
        raise InvalidSubscription("'endpoint' is not a valid URL") from None
    if parts.scheme != "https":
        raise InvalidSubscription("'endpoint' must be an https URL")
    if parts.username is not None or parts.password is not None or any(c.isspace() for c in endpoint):
        raise InvalidSubscription("'endpoint' must be a plain https URL")
    if not host_allowed(host, current_app.config["PUSH_ALLOWED_HOSTS"]):
        raise InvalidSubscription(f"'endpoint' is not a known push service ({host or 'no host'})")
    return endpoint


def check_keys(keys: object) -> tuple[str, str]:
    """Return ``(p256dh, auth)`` if they are a browser's push keys; raise InvalidSubscription otherwise."""
    if not isinstance(keys, dict):
        raise InvalidSubscription("'keys' must be an object with 'p256dh' and 'auth'")
    p256dh, auth = keys.get("p256dh"), keys.get("auth")
    try:
        point = b64url_decode(p256dh)  # type: ignore[arg-type]
        secret = b64url_decode(auth)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        raise InvalidSubscription("'keys.p256dh' and 'keys.auth' must be base64url") from None
    if len(point) != 65 or point[0] != 4:
        raise InvalidSubscription("'keys.p256dh' must be an uncompressed P-256 public key (65 bytes)")
    if len(secret) != 16:
        raise InvalidSubscription("'keys.auth' must be 16 bytes")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise InvalidSubscription("'keys.p256dh' is not a point on P-256") from None
    return str(p256dh).rstrip("="), str(auth).rstrip("=")


def parse(data: dict) -> Parsed:
    """Check a ``PushSubscription.toJSON()`` body; raise InvalidSubscription saying what is wrong."""
    expiration = data.get("expirationTime")
    if expiration is not None and (isinstance(expiration, bool) or not isinstance(expiration, int | float)):
        raise InvalidSubscription("'expirationTime' must be null or a number")
    endpoint = check_endpoint(data.get("endpoint"))
    p256dh, auth = check_keys(data.get("keys"))
    return Parsed(endpoint, p256dh, auth)


def save(user_id: int, parsed: Parsed, user_agent: str, session_id: str | None = None) -> tuple[PushSubscription, bool]:
    """Store ``parsed`` as ``user_id``'s device, subscribed from sign-in ``session_id``;
    return it and whether it is new.

    The same endpoint again (the browser renewed its keys, or another user signed in on
    it) updates the row and gives it to ``user_id``. Past PUSH_MAX_SUBSCRIPTIONS the
    user's oldest devices go.
    """
    row = db.session.scalar(select(PushSubscription).where(PushSubscription.endpoint == parsed.endpoint))
    created = row is None
    if row is None:
        row = PushSubscription(endpoint=parsed.endpoint, created_at=utcnow())
        db.session.add(row)
    elif row.user_id != user_id:
        row.created_at = utcnow()  # a new device for this user
    row.user_id, row.p256dh, row.auth = user_id, parsed.p256dh, parsed.auth
    row.user_agent = (user_agent or "")[:MAX_USER_AGENT]
    row.session_id = session_id
    db.session.flush()
    _keep_newest(user_id, current_app.config["PUSH_MAX_SUBSCRIPTIONS"], row.id)
    db.session.commit()
    return row, created


def _keep_newest(user_id: int, limit: int, keep: int) -> None:
    """Delete the user's oldest subscriptions beyond ``limit`` (never ``keep``, the one just saved)."""
    ids = list(
        db.session.scalars(
            select(PushSubscription.id)
            .where(PushSubscription.user_id == user_id)
            .order_by(
                (PushSubscription.id == keep).desc(), PushSubscription.created_at.desc(), PushSubscription.id.desc()
            )
        )
    )
    if len(ids) > limit:
        db.session.execute(delete(PushSubscription).where(PushSubscription.id.in_(ids[limit:])))


def list_for(user_id: int) -> list[PushSubscription]:
    """Return the user's devices, newest first."""
    return list(
        db.session.scalars(
            select(PushSubscription)
            .where(PushSubscription.user_id == user_id)
            .order_by(PushSubscription.created_at.desc(), PushSubscription.id.desc())
        )
    )


def remove(user_id: int, subscription_id: int) -> bool:
    """Delete one of the user's devices; False if the user has no such device."""
    result = db.session.execute(
        delete(PushSubscription).where(PushSubscription.id == subscription_id, PushSubscription.user_id == user_id)
    )
    db.session.commit()
    return bool(getattr(result, "rowcount", 0))


def forget_session(user_id: int, session_id: str) -> int:
    """Delete the devices ``user_id`` subscribed while signed in as ``session_id`` (signing out
    of it); return how many. The browser's own subscription stays until someone turns push on
    there again, which posts it anew."""
    gone = db.session.execute(
        delete(PushSubscription).where(PushSubscription.user_id == user_id, PushSubscription.session_id == session_id)
    )
    db.session.commit()
    return int(getattr(gone, "rowcount", 0) or 0)


def forget(subscription_id: int) -> None:
    """Delete a subscription the push service said is gone (404/410)."""
    db.session.execute(delete(PushSubscription).where(PushSubscription.id == subscription_id))
    db.session.commit()


def users_with_devices(user_ids: set[int] | list[int]) -> set[int]:
    """Return which of ``user_ids`` have at least one push subscription (one query per 5,000 ids;
    a fan-out batch's close-together ids as one index range, ``recipients.among``)."""
    ids, found = sorted(set(user_ids)), set[int]()
    for start in range(0, len(ids), 5000):
        dense, params = among_params(ids[start : start + 5000])
        found.update(db.session.scalars(_with_devices_query(dense), params))
    return found.intersection(ids)


@functools.cache
def _with_devices_query(dense: bool) -> Select:
    """``users_with_devices``' query, built once (a fan-out batch runs it every time)."""
    return select(PushSubscription.user_id).distinct().where(among_bound(PushSubscription.user_id, dense))


def devices_of(user_ids: list[int]) -> list[PushSubscription]:
    """Return every subscription of ``user_ids``, by user."""
    return list(
        db.session.scalars(
            select(PushSubscription)
            .where(PushSubscription.user_id.in_(user_ids))
            .order_by(PushSubscription.user_id, PushSubscription.id)
        )
    )
