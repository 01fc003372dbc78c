"""Operator endpoints: ``/healthz`` (is this process able to serve?) and ``/metrics``."""

from __future__ import annotations

import redis
from flask import current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ..events import bus, channels
from ..events.outbox import outbox_counts
from ..extensions import db
from . import bp


@bp.get("/healthz")
def healthz():
    """Return 200 when the database and Redis answer, 503 otherwise."""
    checks = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # report, don't crash: this is what health checks are for
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        bus.redis_client().ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    healthy = all(v == "ok" for v in checks.values())
    return jsonify(status="ok" if healthy else "degraded", checks=checks), 200 if healthy else 503


def _delivery_lines() -> list[str]:
    """Counts of the delivery pipeline (shared by every process): outbox and dead letters.

    Left out, not a 500, while the database or Redis cannot answer: /healthz reports that.
    """
    lines = []
    try:
        counts = outbox_counts()
        lines += [
            "# HELP qa_notify_outbox_undelivered Events waiting for delivery (not failed).",
            "# TYPE qa_notify_outbox_undelivered gauge",
            f"qa_notify_outbox_undelivered {counts['undelivered']}",
            "# HELP qa_notify_outbox_failed Events whose delivery failed too often; retried only by an admin.",
            "# TYPE qa_notify_outbox_failed gauge",
            f"qa_notify_outbox_failed {counts['failed']}",
        ]
    except SQLAlchemyError:
        db.session.rollback()
    try:
        dead = bus.redis_client().xlen(channels.DEAD_LETTER_STREAM)
        lines += [
            "# HELP qa_notify_ingest_dead_letters Entries of qa:ingest refused (kept in qa:ingest:dead).",
            "# TYPE qa_notify_ingest_dead_letters gauge",
            f"qa_notify_ingest_dead_letters {dead}",
        ]
    except redis.RedisError:
        pass
    return lines


@bp.get("/metrics")
def metrics():
    """Return stream figures of this process and delivery counts, in Prometheus' text format.

    Only counts: no user, event or payload is ever shown here.
    """
    hub = current_app.extensions.get("qa_hub")
    lines = [
        "# HELP qa_notify_open_streams Open SSE streams in this process.",
        "# TYPE qa_notify_open_streams gauge",
        f"qa_notify_open_streams {hub.total() if hub else 0}",
        "# HELP qa_notify_stream_users Users with at least one open stream in this process.",
        "# TYPE qa_notify_stream_users gauge",
        f"qa_notify_stream_users {hub.user_count() if hub else 0}",
        "# HELP qa_notify_slow_consumers_total Streams cut off because the client stopped reading.",
        "# TYPE qa_notify_slow_consumers_total counter",
        f"qa_notify_slow_consumers_total {hub.cut_off_count if hub else 0}",
        "# HELP qa_notify_hub_connected 1 when every Redis subscriber connection this process needs is up.",
        "# TYPE qa_notify_hub_connected gauge",
        f"qa_notify_hub_connected {1 if hub and hub.is_connected() else 0}",
        "# HELP qa_notify_hub_connections Redis subscriber connections (one per Redis master in use).",
        "# TYPE qa_notify_hub_connections gauge",
        f"qa_notify_hub_connections {hub.connection_count() if hub else 0}",
        *_delivery_lines(),
    ]
    return "\n".join(lines) + "\n", 200, {"Content-Type": "text/plain; version=0.0.4"}
