"""Worker entry point: ``celery -A workers.celery_app worker``."""

from qa_notify import create_app

celery = create_app().extensions["celery"]
