"""Operator endpoints: ``/healthz`` (each dependency), ``/readyz`` (send me traffic?) and ``/metrics``."""

from __future__ import annotations

import redis
from flask import current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ..events import bus, channels
from ..events.connections import is_cluster, is_cluster_client
from ..events.outbox import outbox_counts
from ..extensions import db
from ..mail.sending import email_counts
from . import bp


def _check(probe) -> str:
    """Run one probe; return "ok" or the kind of error (never the message: it may hold secrets)."""
    try:
        probe()
        return "ok"
    except Exception as exc:  # report, don't crash: this is what health checks are for
        db.session.rollback()
        return f"error: {type(exc).__name__}"


def _redis_checks() -> dict[str, str]:
    """One check per Redis server that takes writes: the server, or each cluster master."""
    try:
        client = bus.redis_client()
    except redis.ConnectionError:
        return {"redis": "error: unreachable" if current_app.config["REDIS_URL"] else "error: not configured"}
    if not is_cluster_client(client):
        return {"redis": _check(client.ping)}
    try:
        masters = client.get_primaries()
    except redis.RedisError as exc:
        return {"redis cluster": f"error: {type(exc).__name__}"}
    return {f"redis {node.name}": _check(node.redis_connection.ping) for node in masters}


def _broker_check() -> str:
    celery = current_app.extensions["celery"]
    if celery.conf.broker_url.startswith("memory://") and is_cluster(current_app.config["REDIS_URL"]):
        return "error: no broker (a Redis Cluster cannot be one; set CELERY_BROKER_URL)"

    def probe():
        with current_app.extensions["celery"].connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)

    return _check(probe)


def _readiness_checks() -> dict[str, str]:
    return {"database": _check(lambda: db.session.execute(text("SELECT 1"))), **_redis_checks()}


@bp.get("/healthz")
def healthz():
    """Report each dependency on its own: the database, every Redis master, Celery's broker.

    200 when all answer, 503 otherwise. A broker that is away does not stop pages or
    streams (events wait in the outbox), but it is reported here.
    """
    checks = {**_readiness_checks(), "broker": _broker_check()}
    healthy = all(v == "ok" for v in checks.values())
    return jsonify(status="ok" if healthy else "degraded", checks=checks), 200 if healthy else 503


@bp.get("/readyz")
def readyz():
    """200 when this process should get traffic: database and Redis answer and it is not draining.

    After SIGTERM the process closes its streams and drains: 503 from then on, so a load
    balancer or an orchestrator sends the reconnecting browsers elsewhere.
    """
    if current_app.extensions.get("qa_draining"):
        return jsonify(status="draining"), 503
    checks = _readiness_checks()
    ready = all(v == "ok" for v in checks.values())
    return jsonify(status="ready" if ready else "unavailable", checks=checks), 200 if ready else 503


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
        emails = email_counts()
        lines += [
            "# HELP qa_notify_emails_sending Emails handed to SMTP and not yet confirmed (or whose worker died).",
            "# TYPE qa_notify_emails_sending gauge",
            f"qa_notify_emails_sending {emails['sending']}",
            "# HELP qa_notify_emails_abandoned Emails whose worker died mid-send: maybe lost, never resent.",
            "# TYPE qa_notify_emails_abandoned gauge",
            f"qa_notify_emails_abandoned {emails['abandoned']}",
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
