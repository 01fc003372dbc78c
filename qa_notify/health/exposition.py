"""The machine's figures, read back: Prometheus' text for ``/metrics``, and a snapshot for the admin's live page.

One scrape reads every process's files (``MultiProcessCollector``), so any web process
answers for the whole machine and Prometheus scrapes one target per machine. It does no
work per stream: the processes keep their own counts. The delivery counts (outbox,
emails, dead letters) are asked of the database and Redis at scrape time; they are the
same on every machine, so dashboards take their ``max``, not their sum.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy.exc import SQLAlchemyError

from ..events import bus, channels
from ..events.outbox import oldest_undelivered, outbox_counts
from ..extensions import db
from ..mail.sending import email_counts
from ..metrics import instruments, machine
from ..models import utcnow

log = logging.getLogger(__name__)
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class DeliveryCollector:
    """Counts of the delivery pipeline, from the database and Redis, taken when scraped.

    A source that cannot answer is left out (logged), never a failed scrape: ``/healthz``
    reports it.
    """

    def collect(self):
        """Yield the outbox, email and dead-letter gauges."""
        try:
            yield from self._outbox()
            yield from self._emails()
        except SQLAlchemyError:
            db.session.rollback()
            log.warning("metrics: the database did not answer; delivery counts left out")
        try:
            yield _gauge(
                "qa_notify_ingest_dead_letters",
                "Entries of qa:ingest refused (kept in qa:ingest:dead).",
                bus.redis_client().xlen(channels.DEAD_LETTER_STREAM),
            )
        except redis.RedisError:
            log.warning("metrics: Redis did not answer; dead letters left out")

    @staticmethod
    def _outbox():
        counts = outbox_counts()
        oldest = oldest_undelivered()
        yield _gauge("qa_notify_outbox_undelivered", "Events waiting for delivery (not failed).", counts["undelivered"])
        yield _gauge(
            "qa_notify_outbox_oldest_age_seconds",
            "Age of the oldest event waiting for delivery; 0 when none waits.",
            (utcnow() - oldest).total_seconds() if oldest else 0,
        )
        yield _gauge(
            "qa_notify_outbox_failed",
            "Events whose delivery failed too often; retried only by an admin.",
            counts["failed"],
        )

    @staticmethod
    def _emails():
        emails = email_counts()
        yield _gauge(
            "qa_notify_emails_sending",
            "Emails handed to SMTP and not yet confirmed (or whose worker died).",
            emails["sending"],
        )
        yield _gauge(
            "qa_notify_emails_retrying",
            "Users owed an email the mail server did not take, waiting for the retry.",
            emails["retrying"],
        )
        yield _gauge(
            "qa_notify_emails_abandoned",
            "Emails whose worker died mid-send: maybe lost, never resent.",
            emails["abandoned"],
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _process_metrics() -> list:
    """The processes' own metric families: the machine's files, or this process's memory."""
    instruments.STREAM_SENT.flush()  # this process's latest stream figures, not a second late
    path = machine.directory()
    if path is None:
        return list(instruments.PROCESS.collect())
    machine.sweep(path)  # a process killed since the last scrape no longer counts
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(path))
    with machine.locked(path):
        return list(registry.collect())


class _Families:
    """A registry of metric families already collected."""

    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self):
        return iter(self.families)


def render() -> bytes:
    """Return the machine's metrics and the delivery counts in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(_process_metrics() + list(DeliveryCollector().collect())))
    return generate_latest(registry)


@dataclass(frozen=True)
class Sample:
    """One value of a metric: its sample name (``_bucket``, ``_count``...), labels and value."""

    name: str
    labels: dict
    value: float


def snapshot() -> dict[str, list[Sample]]:
    """Return every metric of the machine (and the delivery counts) by family name."""
    families = _process_metrics() + list(DeliveryCollector().collect())
    return {f.name: [Sample(s.name, dict(s.labels), s.value) for s in f.samples] for f in families}
