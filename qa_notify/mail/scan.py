"""Who gets an email now, and sending it: the away scan, the daily digest and their retries.

Users are found in keyset chunks of ``CHUNK`` ids, each handed to a task, so a scan never
holds more than one chunk however many users there are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import redis
from flask import current_app
from sqlalchemy import exists, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from ..events import bus
from ..events.announce import notification_announced_on
from ..extensions import db
from ..live.leases import presence
from ..models import Notification, User, utcnow
from . import sending
from .content import build_message

log = logging.getLogger(__name__)
CHUNK = 50
SCAN_PAGE = 1000
# A digest covers notifications at least this old, so rows a fan-out is still committing
# (created a moment before the digest ran) fall in tomorrow's digest, not in no digest.
DIGEST_SETTLE = timedelta(seconds=60)
FIRST_DIGEST_SPAN = timedelta(days=1)


def _chunks(query_page: Callable[[int], list[int]]) -> Iterator[list[int]]:
    """Yield user ids in chunks of CHUNK, reading SCAN_PAGE ids at a time by keyset."""
    after = 0
    while True:
        ids = query_page(after)
        for start in range(0, len(ids), CHUNK):
            yield ids[start : start + CHUNK]
        if len(ids) < SCAN_PAGE:
            return
        after = ids[-1]


def _pending(now: datetime):
    """The condition "this user has a notification an away email could cover"."""
    upper = now - timedelta(seconds=current_app.config["EMAIL_AWAY_SECONDS"])
    return exists().where(
        Notification.user_id == User.id,
        Notification.read_at.is_(None),
        Notification.email_id.is_(None),
        Notification.created_at <= upper,
        or_(User.email_checked_until.is_(None), Notification.created_at > User.email_checked_until),
        notification_announced_on("email"),
    )


def _may_email(now: datetime):
    """The condition "this user may be emailed now": address set and confirmed, not backing off."""
    return (
        User.email.is_not(None),
        User.email != "",
        User.email_verified_at.is_not(None),
        or_(User.email_retry_at.is_(None), User.email_retry_at <= now),
    )


def due_away() -> Iterator[list[int]]:
    """Yield chunks of users in "away" mode with something to email and no email too recently."""
    now = utcnow()
    since = now - timedelta(seconds=current_app.config["EMAIL_MIN_INTERVAL"])

    def page(after: int) -> list[int]:
        return list(
            db.session.scalars(
                select(User.id)
                .where(User.id > after, User.email_mode == "away", *_may_email(now))
                .where(or_(User.last_emailed_at.is_(None), User.last_emailed_at <= since), _pending(now))
                .order_by(User.id)
                .limit(SCAN_PAGE)
            )
        )

    return _chunks(page)


def due_digest_retries() -> Iterator[list[int]]:
    """Yield chunks of digest users whose digest could not be sent and is due again."""
    now = utcnow()

    def page(after: int) -> list[int]:
        return list(
            db.session.scalars(
                select(User.id)
                .where(User.id > after, User.email_mode == "digest", User.email_retry_at.is_not(None))
                .where(*_may_email(now))
                .order_by(User.id)
                .limit(SCAN_PAGE)
            )
        )

    return _chunks(page)


def digest_users() -> Iterator[list[int]]:
    """Yield chunks of every user in digest mode with an address."""

    def page(after: int) -> list[int]:
        return list(
            db.session.scalars(
                select(User.id)
                .where(User.id > after, User.email_mode == "digest", User.email.is_not(None), User.email != "")
                .where(User.email_verified_at.is_not(None))
                .order_by(User.id)
                .limit(SCAN_PAGE)
            )
        )

    return _chunks(page)


def _from_unix(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)


def email_away(user_id: int) -> str:
    """Email ``user_id`` the notifications they were not there to see; return what happened.

    ``sent``, ``seen`` (a stream is open: everything pending was delivered live),
    ``nothing``, ``waiting`` (too soon after the last email, or backing off), ``off``,
    ``failed`` (the server did not take it: retried later) or ``unknown`` (see sending).
    """
    config = current_app.config
    user = _emailable(user_id, "away")
    if user is None:
        return "off"
    now = utcnow()
    if _backing_off(user, now):
        return "waiting"
    if user.last_emailed_at and user.last_emailed_at > now - timedelta(seconds=config["EMAIL_MIN_INTERVAL"]):
        return "waiting"
    upper = now - timedelta(seconds=config["EMAIL_AWAY_SECONDS"])
    seen = presence(bus.redis_client(), user_id)
    if seen.online:
        _checked(user_id, upper)
        return "seen"
    lowers = [t for t in (user.email_checked_until, seen.last_seen and _from_unix(seen.last_seen)) if t]
    window = [
        Notification.user_id == user_id,
        Notification.read_at.is_(None),
        Notification.created_at <= upper,
        *([Notification.created_at > max(lowers)] if lowers else []),
        notification_announced_on("email"),
    ]
    outcome = _reserve_and_send(user, "away", window, email_checked_until=upper)
    if outcome == "nothing":
        _checked(user_id, upper)
    return outcome


def email_digest(user_id: int) -> str:
    """Send ``user_id`` their daily digest of unread notifications since the last one; return what happened."""
    user = _emailable(user_id, "digest")
    if user is None:
        return "off"
    now = utcnow()
    if _backing_off(user, now):
        return "waiting"
    upper = now - DIGEST_SETTLE
    window = [
        Notification.user_id == user_id,
        Notification.read_at.is_(None),
        Notification.created_at > (user.digest_until or now - FIRST_DIGEST_SPAN),
        Notification.created_at <= upper,
        notification_announced_on("email"),
    ]
    had_retry = user.email_retry_at is not None
    outcome = _reserve_and_send(user, "digest", window, digest_until=upper)
    if outcome == "nothing" and had_retry:  # a retry with nothing left to say: nothing is owed
        db.session.execute(update(User).where(User.id == user_id).values(email_retry_at=None, email_failures=0))
        db.session.commit()
    return outcome


def _emailable(user_id: int, mode: str) -> User | None:
    """The user, if they chose ``mode`` and have a confirmed address; else None."""
    user = db.session.get(User, user_id)
    if user is None or user.email_mode != mode or not user.email or user.email_verified_at is None:
        return None
    return user


def _backing_off(user: User, now: datetime) -> bool:
    """True while a failed email's retry is not due yet."""
    return bool(user.email_retry_at and user.email_retry_at > now)


def _reserve_and_send(user: User, kind: str, window: list, **marks: datetime) -> str:
    """Record an email of the notifications in ``window`` (moving the user's ``marks``), then send it.

    Return "busy" (another worker is emailing this user), "nothing" (no notification in the
    window) or what ``_send`` returned.
    """
    restore = {"last_emailed_at": user.last_emailed_at, **{name: getattr(user, name) for name in marks}}
    try:
        row = sending.reserve(user, kind, window, **marks)
    except sending.Busy:
        return "busy"
    if row is None:
        return "nothing"
    return _send(user, kind, row.id, restore)


def _checked(user_id: int, upper: datetime) -> None:
    """Record that the user's notifications up to ``upper`` need no away email."""
    db.session.execute(
        update(User)
        .where(User.id == user_id, or_(User.email_checked_until.is_(None), User.email_checked_until < upper))
        .values(email_checked_until=upper)
    )
    db.session.commit()


def _send(user: User, kind: str, email_id: int, restore: dict) -> str:
    """Build and hand over the recorded email; confirm it, or undo it if the server never took it."""
    failures = user.email_failures
    try:
        message = build_message(user, kind, email_id)
        sending.hand_over(message)
    except sending.NotHandedOver as exc:
        sending.undo(email_id, user.id, restore, failures, str(exc))
        return "failed"
    except sending.Unknown as exc:
        sending.leave_unknown(email_id, user.id, str(exc))
        return "unknown"
    except Exception as exc:  # building it failed (a bug): nothing was sent, so it may be retried
        log.exception("could not build email %s for user %s", email_id, user.id)
        sending.undo(email_id, user.id, restore, failures, f"{type(exc).__name__}: {exc}")
        return "failed"
    sending.mark_sent(email_id, user.id)
    return "sent"


def email_users(kind: str, user_ids: list[int]) -> dict[str, int]:
    """Email each user in turn (``away`` or ``digest``); one user's failure never stops the others.

    Return how many users ended in each outcome.
    """
    send = email_away if kind == "away" else email_digest
    outcomes: dict[str, int] = {}
    for user_id in user_ids:
        try:
            outcome = send(user_id)
        except (redis.RedisError, SQLAlchemyError) as exc:
            # Redis (presence) or the database is away: nothing was sent; the next scan tries again.
            db.session.rollback()
            log.warning("%s email for user %s skipped this time: %s", kind, user_id, exc)
            outcome = "skipped"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


def scan(enqueue: Callable[[str, list[int]], object]) -> int:
    """Hand every user who is owed an email now to ``enqueue(kind, user_ids)``; return how many.

    First marks emails left ``sending`` past the grace period abandoned. With malformed
    mail settings nothing is handed out: one log line (again only when the problem
    changes), and the emails wait until the settings are fixed.
    """
    config = current_app.config
    sending.abandon_stale(config["EMAIL_SENDING_GRACE_SECONDS"])
    problem = sending.settings_problem(config)
    if problem:
        if current_app.extensions.get("qa_mail_problem") != problem:
            log.error("%s: no email is sent until it is fixed", problem)
        current_app.extensions["qa_mail_problem"] = problem
        return 0
    current_app.extensions.pop("qa_mail_problem", None)
    users = 0
    for kind, chunks in (("away", due_away()), ("digest", due_digest_retries())):
        for chunk in chunks:
            enqueue(kind, chunk)
            users += len(chunk)
    return users


def start_digests(enqueue: Callable[[str, list[int]], object]) -> int:
    """Hand every digest user to ``enqueue("digest", user_ids)`` in chunks; return how many."""
    users = 0
    for chunk in digest_users():
        enqueue("digest", chunk)
        users += len(chunk)
    return users
