"""Worker entry point: ``celery -A workers.celery_app worker``."""

from qa_notify import create_app
from workers import NO_CLUSTER_BROKER

celery = create_app().extensions["celery"]
if celery.conf.broker_url.startswith("memory://"):
    raise SystemExit(f"qa_notify worker: {NO_CLUSTER_BROKER}")
