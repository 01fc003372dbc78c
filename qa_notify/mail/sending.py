"""Sending one email at most once: record it, hand it to the mail server, then confirm or undo.

``reserve`` records the email (``EmailMessage``, status ``sending``) and marks every
notification it covers with its id, in one committed transaction, before anything is sent.
``hand_over`` gives the message to Flask-Mailman's backend and says how it went:

- the server took it: ``mark_sent``;
- it never took it (cannot be reached, refused the connection, TLS or login, or answered
  the envelope or the data with an error code, or the settings are malformed): ``undo``
  deletes the record and frees the notifications, so a later scan sends them, after a
  backoff that doubles per failure;
- nobody knows (the connection broke or timed out in the middle of the transaction, the
  data perhaps taken): the record stays ``sending`` and is never sent again, like one
  whose worker was killed; the scan marks it ``abandoned`` after
  ``EMAIL_SENDING_GRACE_SECONDS``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import smtplib
import time
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import delete, func, select, update

from ..extensions import db, mail
from ..metrics import instruments
from ..models import EmailMessage, Notification, User, utcnow

log = logging.getLogger(__name__)
MAX_BACKOFF_SECONDS = 3600
# A host name or an IPv4/IPv6 address: no scheme, path, port or spaces.
_HOST = re.compile(
    r"^(\[[0-9a-fA-F:.]+\]|[0-9a-fA-F:]*:[0-9a-fA-F:.]+|[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?)\Z"
)


class NotHandedOver(Exception):
    """The mail server did not take the message: safe to send it again later."""


class Busy(Exception):
    """Another worker is emailing this user right now (or just did)."""


class Unknown(Exception):
    """The connection failed while the server had the message: it may have been delivered."""


def settings_problem(config) -> str | None:
    """Return what is wrong with the SMTP settings in one sentence, or None when they can be used."""
    server = config.get("MAIL_SERVER")
    if not server:
        return None  # the .eml file backend
    if not isinstance(server, str) or not _HOST.match(server):
        return f"MAIL_SERVER {str(server)[:80]!r} is not a host name or address (no scheme, port or path)"
    port = str(config.get("MAIL_PORT", "")).strip()
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        return f"MAIL_PORT {port[:20]!r} is not a port number (1-65535)"
    if config.get("MAIL_USE_TLS") and config.get("MAIL_USE_SSL"):
        return "MAIL_USE_TLS and MAIL_USE_SSL are both on; set one (STARTTLS on 587, or SSL on 465)"
    return None


def hand_over(message) -> None:
    """Give ``message`` to the mail server (or the .eml writer); raise NotHandedOver or Unknown."""
    problem = settings_problem(current_app.config)
    if problem:
        raise NotHandedOver(problem)
    started = time.monotonic()
    try:
        connection = mail.get_connection()
        connection.open()  # connect, STARTTLS, login: nothing has been sent yet
    except (OSError, smtplib.SMTPException, ValueError) as exc:
        raise NotHandedOver(f"mail server {_where()}: {_reason(exc)}") from None
    try:
        connection.send_messages([message])
    except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused) as exc:
        # The server answered MAIL FROM, RCPT TO or the data with an error: it kept nothing.
        raise NotHandedOver(f"mail server {_where()} refused the message: {_reason(exc)}") from None
    except (OSError, smtplib.SMTPException) as exc:
        raise Unknown(f"mail server {_where()}: {_reason(exc)} while sending") from None
    finally:
        # After the data was taken, a failed QUIT changes nothing.
        with contextlib.suppress(OSError, smtplib.SMTPException):
            connection.close()
    instruments.EMAIL_SEND.observe(time.monotonic() - started)


def _where() -> str:
    config = current_app.config
    return f"{config.get('MAIL_SERVER')}:{config.get('MAIL_PORT')}" if config.get("MAIL_SERVER") else "(files)"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        return f"{exc.smtp_code} {text}"[:300]
    return f"{type(exc).__name__}: {exc}"[:300]


def reserve(user: User, kind: str, window: list, **user_values) -> EmailMessage | None:
    """Record an email to ``user`` covering the notifications matching ``window``, and commit.

    The user row is claimed with a compare-and-set on ``last_emailed_at``, so two workers
    handed the same user cannot both email them; the notifications are taken only while
    no email covers them yet. ``user_values`` (e.g. ``email_checked_until``) are set with
    the claim. Return None (nothing recorded) if no notification matched; raise Busy if
    another worker claimed the user first.
    """
    now = utcnow()
    row = EmailMessage(user_id=user.id, kind=kind, status="sending", created_at=now)
    db.session.add(row)
    db.session.flush()
    same = (
        User.last_emailed_at.is_(None) if user.last_emailed_at is None else User.last_emailed_at == user.last_emailed_at
    )
    claimed = db.session.execute(
        update(User).where(User.id == user.id, same).values(last_emailed_at=now, **user_values),
        execution_options={"synchronize_session": False},
    ).rowcount
    if claimed != 1:
        db.session.rollback()
        raise Busy(f"user {user.id} is being emailed by another worker")
    covered = db.session.execute(
        update(Notification).where(*window, Notification.email_id.is_(None)).values(email_id=row.id),
        execution_options={"synchronize_session": False},
    ).rowcount
    if not covered:
        db.session.rollback()
        return None
    row.notification_count = covered
    db.session.commit()
    return row


def mark_sent(email_id: int, user_id: int) -> None:
    """The server took email ``email_id``: record it, and that nothing is owed any more."""
    now = utcnow()
    db.session.execute(update(EmailMessage).where(EmailMessage.id == email_id).values(status="sent", sent_at=now))
    db.session.execute(
        update(User).where(User.id == user_id).values(last_emailed_at=now, email_failures=0, email_retry_at=None)
    )
    db.session.commit()


def undo(email_id: int, user_id: int, restore: dict, failures: int, reason: str) -> datetime:
    """The server never took email ``email_id``: forget it, free its notifications, back off.

    ``restore`` puts back the user's columns the reservation changed. Return when the
    email will be tried again.
    """
    delay = min(current_app.config["EMAIL_SCAN_SECONDS"] * 2 ** min(failures, 20), MAX_BACKOFF_SECONDS)
    retry_at = utcnow() + timedelta(seconds=delay)
    db.session.rollback()
    db.session.execute(update(Notification).where(Notification.email_id == email_id).values(email_id=None))
    db.session.execute(delete(EmailMessage).where(EmailMessage.id == email_id))
    db.session.execute(
        update(User).where(User.id == user_id).values(**restore, email_failures=failures + 1, email_retry_at=retry_at)
    )
    db.session.commit()
    log.warning("email to user %s waits: %s; retrying in %.0f s", user_id, reason, delay)
    return retry_at


def leave_unknown(email_id: int, user_id: int, reason: str) -> None:
    """Keep a record whose fate is unknown as ``sending``: it is never resent."""
    db.session.rollback()
    db.session.execute(update(EmailMessage).where(EmailMessage.id == email_id).values(last_error=reason[:500]))
    db.session.commit()
    log.error("email %s to user %s may or may not have gone (%s); it will not be sent again", email_id, user_id, reason)


def abandon_stale(grace_seconds: float, limit: int = 1000) -> int:
    """Mark emails left ``sending`` longer than ``grace_seconds`` (their worker died) abandoned."""
    cutoff = utcnow() - timedelta(seconds=grace_seconds)
    rows = db.session.execute(
        select(EmailMessage.id, EmailMessage.user_id)
        .where(EmailMessage.status == "sending", EmailMessage.created_at < cutoff)
        .order_by(EmailMessage.id)
        .limit(limit)
    ).all()
    for email_id, user_id in rows:
        log.warning(
            "email %s to user %s was left sending (its worker died mid-send?): marked abandoned, not resent",
            email_id,
            user_id,
        )
    if rows:
        db.session.execute(
            update(EmailMessage)
            .where(EmailMessage.id.in_([r.id for r in rows]), EmailMessage.status == "sending")
            .values(status="abandoned", last_error="left sending past the grace period; not resent")
        )
        db.session.commit()
    return len(rows)


def email_counts() -> dict[str, int]:
    """Return how many emails are ``sending`` and ``abandoned`` (the status index keeps it cheap),
    and how many users wait for the retry of an email the server did not take (for /metrics)."""
    rows = db.session.execute(
        select(EmailMessage.status, func.count())
        .where(EmailMessage.status.in_(("sending", "abandoned")))
        .group_by(EmailMessage.status)
    )
    counts = {"sending": 0, "abandoned": 0}
    counts.update({status: int(n) for status, n in rows})
    retrying = select(func.count()).select_from(User).where(User.email_retry_at.is_not(None))
    counts["retrying"] = db.session.scalar(retrying) or 0
    return counts
