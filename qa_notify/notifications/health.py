"""Operator endpoints: ``/healthz`` (is this process able to serve?) and ``/metrics``."""

from __future__ import annotations

from flask import current_app, jsonify
from sqlalchemy import text

from ..events import bus
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


@bp.get("/metrics")
def metrics():
    """Return this process's stream figures in Prometheus' text format."""
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
        "# HELP qa_notify_hub_connected 1 when this process's Redis subscriber is connected.",
        "# TYPE qa_notify_hub_connected gauge",
        f"qa_notify_hub_connected {1 if hub and hub.connected.is_set() else 0}",
    ]
    return "\n".join(lines) + "\n", 200, {"Content-Type": "text/plain; version=0.0.4"}
