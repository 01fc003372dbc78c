"""The work the site hands to background workers, as enqueue functions bound when the app starts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import current_app


@dataclass(frozen=True)
class Jobs:
    """One enqueue function per job the web side asks for; ``workers.celery_init_app`` binds them.

    Each may raise when the broker is away: callers log that and carry on (the outbox
    relay, or saving again, makes up for it).
    """

    drain_outbox: Callable[[], object]  # have a worker deliver the waiting outbox rows
    confirm_email: Callable[[int], object]  # email a user's new address its confirmation link
    # Web Push (qa_notify.push): after a fan-out batch stored its inbox rows, queue pushes for
    # those (outbox id, user ids) who have a device; after a broadcast, for its outbox id.
    push_after_delivery: Callable[[list[tuple[int, list[int]]]], object] = lambda deliveries: 0
    push_after_broadcast: Callable[[int], object] = lambda outbox_id: 0


def jobs() -> Jobs:
    """Return the enqueue functions of the app in context."""
    return current_app.extensions["jobs"]
