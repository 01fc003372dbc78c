"""Email against real processes: a Celery worker (with beat) that is SIGKILLed mid-send, and
an SMTP server that is down when the emails fall due.

The SMTP server is aiosmtpd in the test process; what it received is what the users got.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from sqlalchemy import select, update

from qa_notify.extensions import db
from qa_notify.models import EmailMessage, User, utcnow

from ..smtp import SMTPSink
from .conftest import record

pytestmark = pytest.mark.faults
USERS = 3
TICKS = 4


def mail_env(stack, smtp_port: int) -> None:
    """Point the stack's workers at the test SMTP server; emails fall due at once."""
    stack.env.update(
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=str(smtp_port),
        MAIL_USE_TLS="0",
        MAIL_TIMEOUT="60",  # the held message must be cut by the kill, not by a timeout
        EMAIL_AWAY_SECONDS="0",
        # No minimum interval: only the record of what was sent may stop a second email.
        EMAIL_MIN_INTERVAL="0",
        EMAIL_SCAN_SECONDS="1",
        EMAIL_SENDING_GRACE_SECONDS="3",
        SITE_URL="https://qa.example.org",
    )


def users_with_pending_notifications(stack) -> list[int]:
    """USERS users in "away" mode with an address, each with TICKS unread notifications."""
    user_ids = stack.users(USERS)
    with stack.app.app_context():
        for uid in user_ids:
            db.session.execute(
                update(User).where(User.id == uid).values(email=f"user{uid}@example.org", email_verified_at=utcnow())
            )
        db.session.commit()
    for n in range(TICKS):
        stack.publish(user_ids, n)  # fanned out in this process (eager): the inboxes are filled
    return user_ids


def emails(stack) -> dict[int, list[str]]:
    """Each user's email records, as statuses, oldest first."""
    with stack.app.app_context():
        db.session.expire_all()
        rows = db.session.scalars(select(EmailMessage).order_by(EmailMessage.id)).all()
        found: dict[int, list[str]] = {}
        for row in rows:
            found.setdefault(row.user_id, []).append(row.status)
        return found


def wait_until(condition, timeout: float, message: str) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, message
        time.sleep(0.1)
    return time.monotonic() - started


def test_worker_killed_while_the_smtp_server_holds_its_message_sends_no_duplicate(fault_stack):
    stack = fault_stack
    smtp = SMTPSink()
    smtp.hold = threading.Event()  # the server takes the first message and holds its reply
    smtp.start()
    try:
        mail_env(stack, smtp.port)
        first, *others = users_with_pending_notifications(stack)
        worker = stack.start_worker(beat=True, concurrency=1)
        assert smtp.holding.wait(60), "the worker never got as far as sending the first email"
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        # The server had the message: the worst case, since the killed worker never learned it went.
        smtp.hold.set()
        smtp.hold = None
        assert len(smtp.to(f"user{first}@example.org")) == 1
        assert emails(stack) == {first: ["sending"]}

        stack.start_worker(beat=True, concurrency=1)
        others_s = wait_until(
            lambda: all(len(smtp.to(f"user{uid}@example.org")) == 1 for uid in others),
            60,
            "the new worker did not email the other users",
        )
        abandoned_s = wait_until(
            lambda: emails(stack).get(first) == ["abandoned"], 30, "the interrupted email was never marked abandoned"
        )
        time.sleep(3)  # three more scans: nobody gets a second email
        received = {uid: len(smtp.to(f"user{uid}@example.org")) for uid in (first, *others)}
        assert received == {uid: 1 for uid in (first, *others)}, f"duplicates or losses: {received}"
        assert emails(stack) == {first: ["abandoned"], **{uid: ["sent"] for uid in others}}
        assert smtp.data_started == USERS, "a message was handed to the server twice"
        record(
            "email_worker_killed",
            users=USERS,
            emails_received=sum(received.values()),
            duplicated=sum(n - 1 for n in received.values() if n > 1),
            lost=sum(1 for n in received.values() if n == 0),
            others_emailed_s_after_new_worker=round(others_s, 2),
            marked_abandoned_s_after_new_worker=round(others_s + abandoned_s, 2),
        )
    finally:
        smtp.stop()


def test_smtp_server_down_the_emails_wait_and_go_once_when_it_is_back(fault_stack):
    stack = fault_stack
    smtp = SMTPSink()  # not started yet: nothing listens on its port
    mail_env(stack, smtp.port)
    user_ids = users_with_pending_notifications(stack)
    stack.start_worker(beat=True, concurrency=1)

    def failures() -> int:
        with stack.app.app_context():
            db.session.expire_all()
            return sum(db.session.scalars(select(User.email_failures).where(User.id.in_(user_ids))))

    wait_until(lambda: failures() >= USERS, 60, "the worker never tried to send")
    time.sleep(3)  # a few more scans while the server is down
    failed_attempts = failures()
    assert emails(stack) == {}, "an email was recorded although the server never took it"
    smtp.start()
    try:
        back_at = time.monotonic()
        wait_until(lambda: len(smtp.messages) >= USERS, 90, "the emails never went once the server was back")
        recovered = time.monotonic() - back_at
        time.sleep(3)
        received = {uid: len(smtp.to(f"user{uid}@example.org")) for uid in user_ids}
        assert received == {uid: 1 for uid in user_ids}, received
        assert emails(stack) == {uid: ["sent"] for uid in user_ids}
        assert failures() == 0
        record(
            "email_smtp_down",
            users=USERS,
            failed_attempts_while_down=failed_attempts,
            emails_received=sum(received.values()),
            duplicated=sum(n - 1 for n in received.values() if n > 1),
            lost=sum(1 for n in received.values() if n == 0),
            delivered_s_after_server_back=round(recovered, 2),
        )
    finally:
        smtp.stop()
