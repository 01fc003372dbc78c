"""What operators read: ``/healthz``, ``/readyz`` and ``/metrics``, the whole machine's figures.

``metrics`` holds the instruments every side writes to; this package reads them back with
the outbox, Redis and email figures, so it sits above the write side, the live side and mail
(and the admin's live page reads it).
"""

from flask import Blueprint

bp = Blueprint("health", __name__)

from . import views  # noqa: E402, F401  (routes register themselves on bp)
