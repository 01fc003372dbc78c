"""Celery for qa_notify, the way Flask's own Celery example sets it up."""

from __future__ import annotations

import logging

from celery import Celery, Task
from celery.schedules import crontab
from flask import Flask

from qa_notify.events.connections import is_cluster

log = logging.getLogger(__name__)
NO_CLUSTER_BROKER = (
    "Celery cannot use a Redis Cluster as its broker: set CELERY_BROKER_URL, e.g. "
    "amqp://user:password@rabbitmq:5672// (RabbitMQ), or redis:// of a single server"
)


def celery_init_app(app: Flask) -> Celery:
    """Create the Celery app from ``app.config``; every task runs inside an app context."""

    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    broker = app.config["CELERY_BROKER_URL"] or app.config["REDIS_URL"]
    if is_cluster(broker):
        # Pages and commands still work; events wait in the outbox until a worker with a real
        # broker runs (the worker refuses to start without one, see workers.celery_app).
        log.error("%s; events wait in the outbox meanwhile", NO_CLUSTER_BROKER)
        broker = "memory://"
    celery = Celery(app.name, task_cls=FlaskTask)
    celery.conf.update(
        broker_url=broker,
        task_default_queue=app.config["CELERY_TASK_QUEUE"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_always_eager=app.config["CELERY_ALWAYS_EAGER"],
        task_eager_propagates=True,
        broker_pool_limit=2,
        broker_connection_retry_on_startup=True,
        # A task whose worker died is redelivered after this long (the outbox relay is faster).
        broker_transport_options={"visibility_timeout": app.config["CELERY_VISIBILITY_TIMEOUT"]},
        worker_hijack_root_logger=False,
        beat_schedule={
            "relay-outbox": {
                "task": "workers.relay_outbox",
                "schedule": app.config["OUTBOX_RELAY_SECONDS"],
            },
            "ingest-external": {
                "task": "workers.ingest_external",
                "schedule": app.config["INGEST_POLL_SECONDS"],
            },
            "scan-email": {
                "task": "workers.scan_email",
                "schedule": app.config["EMAIL_SCAN_SECONDS"],
            },
            "send-digests": {
                "task": "workers.send_digests",
                "schedule": crontab(hour=app.config["EMAIL_DIGEST_HOUR"], minute=0),
            },
        },
    )
    celery.set_default()
    app.extensions["celery"] = celery
    from . import tasks

    tasks.register(celery)
    return celery
