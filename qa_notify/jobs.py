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


def jobs() -> Jobs:
    """Return the enqueue functions of the app in context."""
    return current_app.extensions["jobs"]
