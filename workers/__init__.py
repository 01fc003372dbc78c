"""Celery for qa_notify, the way Flask's own Celery example sets it up: ``celery_init_app`` and the tasks."""

from __future__ import annotations

import logging

from celery import Celery, Task
from celery.schedules import crontab
from flask import Flask

from qa_notify.events.connections import is_cluster
from qa_notify.jobs import Jobs

from . import tasks

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
    )
    celery.set_default()
    app.extensions["celery"] = celery
    # Configured first: the tasks take their defaults from the settings when bound, below.
    celery.conf.beat_schedule = beat_schedule(app)
    bind_jobs(app, celery)
    return celery


def beat_schedule(app: Flask) -> dict:
    """Return the periodic tasks that the one worker with ``--beat`` starts."""
    return {
        "relay-outbox": {"task": tasks.relay_outbox.name, "schedule": app.config["OUTBOX_RELAY_SECONDS"]},
        "ingest-external": {"task": tasks.ingest_external.name, "schedule": app.config["INGEST_POLL_SECONDS"]},
        "scan-email": {"task": tasks.scan_email.name, "schedule": app.config["EMAIL_SCAN_SECONDS"]},
        "purge-read-notifications": {
            "task": tasks.purge_read_notifications.name,
            "schedule": app.config["INBOX_RETENTION_SECONDS"],
        },
        "send-digests": {
            "task": tasks.send_digests.name,
            "schedule": crontab(hour=app.config["EMAIL_DIGEST_HOUR"], minute=0),
        },
    }


def bind_jobs(app: Flask, celery: Celery) -> None:
    """Give the web side its enqueue functions (``qa_notify.jobs``), bound to this Celery app's tasks."""
    drain_outbox = celery.tasks[tasks.drain_outbox.name]
    confirm_email = celery.tasks[tasks.confirm_email.name]
    app.extensions["jobs"] = Jobs(
        drain_outbox=lambda: drain_outbox.apply_async(retry=False),
        confirm_email=lambda user_id: confirm_email.apply_async(args=[user_id], retry=False),
    )
