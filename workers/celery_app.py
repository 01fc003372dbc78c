"""Worker entry point: ``celery -A workers.celery_app worker``."""

from celery.signals import setup_logging, worker_process_shutdown

from config import INSTANCE_DIR
from qa_notify import create_app
from qa_notify.logs import configure_logging
from qa_notify.metrics import machine
from workers import NO_CLUSTER_BROKER

# Metrics in the machine's directory (manage.py worker names it; `celery -A` alone gets the
# same default), before the app imports prometheus_client.
machine.join(INSTANCE_DIR / "metrics")
try:
    configure_logging()  # now, so the app's own lines at start are formatted like the rest
except ValueError as exc:
    raise SystemExit(f"qa_notify worker: {exc}") from None


@setup_logging.connect
def log_like_the_web(loglevel: int | None = None, **_) -> None:
    """Keep our configuration when the worker sets up logging (at its ``--loglevel``), so
    Celery's own lines go through the same format instead of Celery's handlers."""
    configure_logging(level=loglevel)


@worker_process_shutdown.connect
def forget_process_gauges(**_) -> None:
    """A pool process is ending (it leaves without running ``atexit``): its live gauges go with it."""
    machine.leave()


celery = create_app().extensions["celery"]
if celery.conf.broker_url.startswith("memory://"):
    raise SystemExit(f"qa_notify worker: {NO_CLUSTER_BROKER}")
