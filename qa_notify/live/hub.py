"""This web process's live hub: its registry of streams wired to a broker and stream leases.

Made on first use (``get_registry``), kept in ``app.extensions["qa_hub"]``, and shut down
with the process (``close_all_streams``).
"""

from __future__ import annotations

from flask import Flask, current_app

from ..events import bus
from .broker import make_broker
from .leases import StreamQuota
from .registry import Registry


def get_registry() -> Registry:
    """Return this process's registry, creating it (on the app's Redis) on first use.

    Raise ``redis.ConnectionError`` while Redis cannot be reached (a 503 to retry).
    """
    registry = current_app.extensions.get("qa_hub")
    if registry is None:
        cfg = current_app.config
        client = bus.redis_client()
        quota = StreamQuota(client, cfg["SSE_MAX_STREAMS_PER_USER"], cfg["SSE_LEASE_SECONDS"])
        registry = current_app.extensions["qa_hub"] = Registry(
            make_broker(client), cfg["SSE_BUFFER_SIZE"], quota, cfg["SSE_HEARTBEAT_SECONDS"]
        )
    return registry


def close_all_streams(app: Flask) -> None:
    """End every open stream of this process (on shutdown): browsers reconnect elsewhere."""
    app.extensions["qa_draining"] = True  # /readyz answers 503 from now on
    registry = app.extensions.get("qa_hub")
    if registry is not None:
        registry.shutdown()
