"""The one summary at the end of a quiet period: when it began, when it ended, the email and push.

The beat (``track_quiet_periods``, every ``QUIET_SCAN_SECONDS``) reads, page by page, the
users with quiet hours, a snooze or a period in progress (one query per page) and decides
in Python (``qa_notify.quiet``):

- quiet now and no period recorded: record its start (``quiet_summary_from``, the start of
  the window or the snooze; a snooze records it itself when set), so a late beat loses
  nothing;
- not quiet any more with a period recorded: the period ended; hand the user to
  ``send_summaries``.

``send_summary`` clears ``quiet_summary_from`` with a compare-and-set before anything goes
out, so a period gets at most one summary however many workers or beats see it; the
summary is sent only if something arrived during the period (unread now): ONE email
(users in "away" mode with a confirmed address; a digest user's digest says it anyway) and
ONE push through the push sender's ``qa_notify.push.sending.send_summary(user_id, count)``
when that module is installed.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import cast

from sqlalchemy import CursorResult, Table, bindparam, func, or_, select, update

from .. import quiet
from ..extensions import db
from ..models import Notification, User, utcnow
from . import scan

log = logging.getLogger(__name__)
PAGE = 1000
PUSH_MODULE = "qa_notify.push.sending"


def track_quiet_periods(enqueue: Callable[[list[int]], object], now: datetime | None = None) -> int:
    """Record quiet periods that began; hand users whose period ended to ``enqueue(user_ids)``.

    Return how many periods ended.
    """
    now = now or utcnow()
    # Snoozes that ran out with no period open are forgotten, so the pages below stay short.
    db.session.execute(
        update(User).where(User.snooze_until <= now, User.quiet_summary_from.is_(None)).values(snooze_until=None)
    )
    db.session.commit()
    columns = (User.id, User.time_zone, User.quiet_start, User.quiet_end, User.snooze_until, User.quiet_summary_from)
    ended = 0
    after = 0
    while True:
        rows = db.session.execute(
            select(*columns)
            .where(User.id > after)
            .where(
                or_(User.quiet_start.is_not(None), User.snooze_until.is_not(None), User.quiet_summary_from.is_not(None))
            )
            .order_by(User.id)
            .limit(PAGE)
        ).all()
        began, over = [], []
        for row in rows:
            settings = quiet.QuietSettings(*row[1:5])
            is_quiet = quiet.quiet_until(settings, now) is not None
            if is_quiet and row.quiet_summary_from is None:
                began.append({"uid": row.id, "start": quiet.period_start(settings, now)})
            elif not is_quiet and row.quiet_summary_from is not None:
                over.append(row.id)
        _record_starts(began)
        if over:
            enqueue(over)
            ended += len(over)
        if len(rows) < PAGE:
            return ended
        after = rows[-1].id


def _record_starts(began: list[dict]) -> None:
    """Set ``quiet_summary_from`` of users whose period began (where no other run did): one executemany."""
    if not began:
        return
    users = cast(Table, User.__table__)
    db.session.execute(
        users.update()
        .where(users.c.id == bindparam("uid"), users.c.quiet_summary_from.is_(None))
        .values(quiet_summary_from=bindparam("start")),
        began,
    )
    db.session.commit()


def send_summary(user_id: int, now: datetime | None = None) -> str:
    """Send ``user_id`` the one summary of their quiet period that ended; return what happened.

    ``nothing`` (no period, or nothing unread arrived), ``quiet`` (it has not ended), ``busy``
    (another worker took it), or ``sent`` (with ``emailed``/``pushed`` logged).
    """
    now = now or utcnow()
    user = db.session.get(User, user_id)
    if user is None or user.quiet_summary_from is None:
        return "nothing"
    if quiet.is_quiet(user, now):
        return "quiet"
    since = user.quiet_summary_from
    result = db.session.execute(
        update(User).where(User.id == user_id, User.quiet_summary_from == since).values(quiet_summary_from=None),
        execution_options={"synchronize_session": False},
    )
    db.session.commit()
    if cast(CursorResult, result).rowcount != 1:
        return "busy"
    count = db.session.scalar(
        select(func.count())
        .select_from(Notification)
        .where(Notification.user_id == user_id, Notification.read_at.is_(None))
        .where(Notification.created_at >= since, Notification.created_at <= now)
    )
    if not count:
        return "nothing"
    pushed = push_summary(user_id, int(count))
    emailed = scan.email_quiet_summary(user_id, since, now)
    log.info("quiet summary for user %s: %s notifications, email %s, push %s", user_id, count, emailed, pushed)
    return "sent"


def push_summary(user_id: int, count: int) -> bool:
    """Hand the summary push to the push sender, if it is installed; True if it was handed over.

    Looked up by name, so this works before and after web push is merged, and ``mail``
    never imports ``push`` (the push sender imports ``qa_notify.quiet``).
    """
    try:
        module = importlib.import_module(PUSH_MODULE)
    except ImportError:
        return False
    send = getattr(module, "send_summary", None)
    if send is None:
        return False
    try:
        send(user_id, count)
    except Exception:  # a push service being away must not cost the email
        log.warning("summary push for user %s failed", user_id, exc_info=True)
        return False
    return True


def send_summaries(user_ids: list[int]) -> dict[str, int]:
    """Send each of these users their quiet period's summary; return how many ended in each outcome."""
    outcomes: dict[str, int] = {}
    for user_id in user_ids:
        try:
            outcome = send_summary(user_id)
        except Exception:
            db.session.rollback()
            log.exception("quiet summary for user %s failed", user_id)
            outcome = "failed"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes
