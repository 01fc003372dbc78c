"""Operator endpoints: ``/healthz`` (each dependency), ``/readyz`` (send me traffic?) and ``/metrics``."""

from __future__ import annotations

import redis
from flask import current_app, jsonify
from sqlalchemy import text

from ..events import bus
from ..events.connections import is_cluster, is_cluster_client
from ..extensions import db
from . import bp, exposition


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


@bp.get("/metrics")
def metrics():
    """Return the whole machine's figures (every web and worker process) and the delivery counts,
    in Prometheus' text format (see ``qa_notify.metrics``).

    Only counts and timings: no user, event or payload is ever shown here.
    """
    return exposition.render(), 200, {"Content-Type": exposition.CONTENT_TYPE}
