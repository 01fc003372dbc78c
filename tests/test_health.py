"""What an operator and a load balancer see: each dependency on /healthz, readiness on /readyz.

Wrong addresses and dependencies that are down give a clear status and a 503 to retry,
never a crash at start or a 500.
"""

from __future__ import annotations

import pytest

from qa_notify import create_app
from qa_notify.events.connections import is_cluster
from qa_notify.extensions import db
from qa_notify.live.hub import close_all_streams


def test_healthz_reports_the_database_every_redis_master_and_the_broker(app, api, redis_url):
    resp = api.get("/healthz")
    body = resp.get_json()
    if app.config["CELERY_BROKER_URL"] == "memory://":  # a cluster run with no RabbitMQ: said plainly
        assert resp.status_code == 503 and "CELERY_BROKER_URL" in body["checks"].pop("broker")
    else:
        assert resp.status_code == 200 and body["status"] == "ok" and body["checks"].pop("broker") == "ok"
    assert body["checks"]["database"] == "ok"
    redis_checks = {k: v for k, v in body["checks"].items() if k.startswith("redis")}
    assert set(redis_checks.values()) == {"ok"}
    assert len(redis_checks) == (3 if is_cluster(redis_url) else 1)  # one per master


def test_a_broker_that_is_down_is_reported_but_the_process_stays_ready(app_config, monkeypatch):
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)  # Celery itself would prefer it
    down = create_app({**app_config, "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:1//"})
    client = down.test_client()
    health = client.get("/healthz")
    assert health.status_code == 503 and health.get_json()["checks"]["broker"].startswith("error")
    assert client.get("/readyz").status_code == 200  # pages and streams work; events wait in the outbox
    with down.app_context():
        db.engine.dispose()


@pytest.mark.parametrize(
    "url", ["redis+cluster://127.0.0.1:1,127.0.0.1:2/", "redis://127.0.0.1:1/0"], ids=["cluster", "server"]
)
def test_an_unreachable_redis_is_a_503_to_retry_not_a_crash(app_config, app, url, caplog):
    broken = create_app({**app_config, "REDIS_URL": url, "CELERY_BROKER_URL": "memory://"})
    client = broken.test_client()
    health = client.get("/healthz").get_json()
    assert health["status"] == "degraded" and health["checks"]["redis"].startswith("error")
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["status"] == "unavailable"
    assert client.get("/api/topics").status_code == 200  # pages that need no Redis keep answering
    if url.startswith("redis+cluster"):
        assert "is not reachable" in caplog.text and ":1," in caplog.text  # one clear line, with the address
    with broken.app_context():
        db.engine.dispose()


def test_readyz_turns_503_while_the_process_drains(app, api):
    assert api.get("/readyz").status_code == 200
    close_all_streams(app)  # what SIGTERM does
    resp = api.get("/readyz")
    assert resp.status_code == 503 and resp.get_json()["status"] == "draining"
