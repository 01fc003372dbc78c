"""Web Push against real processes: the push service is down for a while, then back.

A Celery worker (with beat) delivers ticks to users who each have devices on our own push
service (tests/pushservice.py). While the service is down (its port takes connections and
drops them, so every try fails), the fan-out still fills every inbox; once it is back, every
owed push arrives exactly once: retried with backoff, never twice to a device.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter

import pytest

from qa_notify import create_app
from qa_notify.events.audiences import Users
from qa_notify.events.outbox import emit
from qa_notify.events.types import CustomEvent
from qa_notify.extensions import db
from qa_notify.push import subscriptions

from ..pushservice import PushService
from .conftest import record

pytestmark = pytest.mark.faults
USERS = 3
TICKS = 4


class Dropper:
    """A push service that is down: it takes each connection on its port and drops it at once."""

    def __init__(self, port: int) -> None:
        self.attempts = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.attempts += 1
            conn.close()

    def stop(self) -> None:
        self.sock.close()
        self.thread.join(5)


def push_settings(service: PushService) -> dict[str, str]:
    return {
        "VAPID_PRIVATE_KEY": service.site_key(),
        "VAPID_SUBJECT": "mailto:ops@example.com",
        "PUSH_ALLOWED_HOSTS": "localhost",
        "PUSH_CA_BUNDLE": str(service.cert_file),
        "PUSH_MIN_INTERVAL": "0",
        "PUSH_TIMEOUT": "5",
    }


def test_pushes_owed_while_the_push_service_was_down_are_sent_once_when_it_is_back(fault_stack, tmp_path):
    service = PushService(tmp_path)
    settings = push_settings(service)
    fault_stack.env.update(settings)
    # The site as a web process runs it: tasks go to the broker, the stack's worker does them.
    app = create_app(
        {
            **{
                k: v
                for k, v in fault_stack.app.config.items()
                if k in ("SECRET_KEY", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_TASK_QUEUE", "SQLALCHEMY_DATABASE_URI")
            },
            "CELERY_ALWAYS_EAGER": False,
            "PUSH_ALLOWED_HOSTS": ("localhost",),
        }
    )
    user_ids = fault_stack.users(USERS)
    devices = {uid: [service.browser() for _ in range(2 if uid == user_ids[0] else 1)] for uid in user_ids}
    with app.app_context():
        for uid, browsers in devices.items():
            for browser in browsers:
                subscriptions.save(uid, subscriptions.parse(browser.to_json()), "test")

    down = Dropper(service.port)
    fault_stack.start_worker(beat=True)
    with app.app_context():
        for n in range(TICKS):
            emit(CustomEvent(name="tick", data={"n": n, "text": f"tick {n}"}), Users(tuple(user_ids)))
            db.session.commit()

    # The fan-out is not held up: every inbox fills while no push can go out.
    deadline = time.monotonic() + 60
    while any(fault_stack.inbox_ticks(uid) != list(range(TICKS)) for uid in user_ids):
        assert time.monotonic() < deadline, "the fan-out did not finish while the push service was down"
        time.sleep(0.2)
    owed = TICKS * sum(len(b) for b in devices.values())
    deadline = time.monotonic() + 60
    while down.attempts < owed:  # every push tried (and failed) at least once
        assert time.monotonic() < deadline, f"only {down.attempts} tries reached the push service"
        time.sleep(0.1)
    tries_while_down = down.attempts
    down.stop()
    back_at = time.monotonic()
    service.start()
    try:
        received = service.wait_for(owed, timeout=120)
        caught_up = time.monotonic() - back_at
        # A quiet period: a second copy of anything would arrive within it.
        quiet_until = time.monotonic() + 8
        while time.monotonic() < quiet_until:
            assert len(service.received) == owed, "a push was sent twice"
            time.sleep(0.2)
    finally:
        service.stop()
    assert service.rejected == []
    per_device = Counter((r.token, r.message["title"]) for r in received)
    assert all(count == 1 for count in per_device.values())
    for browsers in devices.values():
        for browser in browsers:
            assert sorted(m["title"] for m in service.messages_for(browser)) == [
                f"tick: tick {n}" for n in range(TICKS)
            ]
    record("push_service_down", owed=owed, tries_while_down=tries_while_down, seconds_to_catch_up=round(caught_up, 1))
