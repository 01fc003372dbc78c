"""What qa_notify's processes count and time, named ``qa_notify_*``, and the calls that record them.

Each recording costs a few microseconds (a write to a memory-mapped file, see
``machine``), so the delivery path records once per batch or per outbox row, never once
per recipient. The one per-recipient figure, an event's time to reach a stream, is
gathered in plain integers and handed to Prometheus once a second (``BulkHistogram``).
"""

from __future__ import annotations

import atexit
import threading
import time
from bisect import bisect_left
from datetime import datetime

from . import machine

# Any process may record (init-db, a shell, a command), not only those that ``join`` the
# machine's directory: a named directory that does not exist yet would fail every metric.
machine.ensure_directory()

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics  # noqa: E402

from ..models import utcnow  # noqa: E402

disable_created_metrics()  # no ``_created`` series: the multiprocess files do not keep them either

# This process's own figures when it keeps them in memory (no PROMETHEUS_MULTIPROC_DIR: tests,
# a shell); with a directory they are read from the files instead (see ``exposition``).
PROCESS = CollectorRegistry()

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

OUTBOX_TO_REDIS = Histogram(
    "qa_notify_outbox_to_redis_seconds",
    "From an outbox row's creation (the answer, question or broadcast committed) to its push to"
    " the users' Redis streams returning; one observation per batch of recipients (per broadcast:"
    " its one publish).",
    buckets=LATENCY_BUCKETS,
    registry=PROCESS,
)
REDIS_TO_STREAM = Histogram(
    "qa_notify_redis_to_stream_seconds",
    "From an event's write to the user's Redis stream (its id's time) to an open stream sending"
    " it; live events only, one observation per event per stream.",
    buckets=LATENCY_BUCKETS,
    registry=PROCESS,
)
FANOUT = Histogram(
    "qa_notify_fanout_seconds",
    "How long the fan-out of one outbox row took, from its start to its last batch pushed.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=PROCESS,
)
RELAY_LAG = Histogram(
    "qa_notify_relay_lag_seconds",
    "Age of the outbox rows the relay re-enqueues (their first enqueue was lost or is late).",
    buckets=(10, 15, 30, 60, 120, 300, 900, 3600),
    registry=PROCESS,
)
EMAIL_SEND = Histogram(
    "qa_notify_email_send_seconds",
    "Time to hand one email to the mail server (connect, log in, send), for emails it took.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=PROCESS,
)
EVENTS_PUSHED = Counter(
    "qa_notify_events_pushed",
    "Notifications pushed to Redis by the fan-out: one per recipient's stream, one per event for"
    " everyone (a broadcast, written once for all).",
    registry=PROCESS,
)
SLOW_CONSUMERS = Counter(
    "qa_notify_slow_consumers",
    "Streams cut off because the client stopped reading.",
    registry=PROCESS,
)


def pushed(created_at: datetime, count: int) -> None:
    """Record a batch of ``count`` recipients pushed for an outbox row created at ``created_at`` (UTC)."""
    if count:
        OUTBOX_TO_REDIS.observe(max(0.0, (utcnow() - created_at).total_seconds()))
        EVENTS_PUSHED.inc(count)


def fanned_out(started: float) -> None:
    """Record a fan-out that started at ``started`` (``time.time()``) and has just finished."""
    FANOUT.observe(max(0.0, time.time() - started))


def relayed(created: list[datetime]) -> None:
    """Record the ages of the outbox rows the relay re-enqueues."""
    now = utcnow()
    for created_at in created:
        RELAY_LAG.observe(max(0.0, (now - created_at).total_seconds()))


class BulkHistogram:
    """A histogram for a hot path: observations add up in plain integers (well under a
    microsecond each) and reach the shared histogram once a second, or on a scrape of
    this process, instead of costing a file write each (~7 µs; a broadcast to 10,000
    streams would have spent 70 ms of its web process on them)."""

    FLUSH_SECONDS = 1.0

    def __init__(self, target: Histogram) -> None:
        self._target = target
        # prometheus_client keeps a histogram's buckets uncumulated, one value per upper
        # bound; a flush adds to them what ``observe`` would have (tests/test_metrics.py).
        self._bounds = list(target._upper_bounds)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        self._starting = threading.Lock()
        self._flusher: threading.Thread | None = None

    def observe_since_ms(self, ms: int) -> None:
        """Observe the seconds from ``ms`` (milliseconds since the epoch, a Redis stream id's time) to now."""
        self.observe(max(0.0, time.time() - ms / 1000))

    def observe(self, value: float) -> None:
        """Observe ``value`` (seconds).

        No lock (it cost more than the rest): a web process's streams are greenlets, which
        never switch in here. Under real threads a flush at the same instant may lose a count.
        """
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value
        if self._flusher is None:
            self._start_flusher()

    def flush(self) -> None:
        """Hand what was observed since the last flush to the shared histogram."""
        counts, self._counts = self._counts, [0] * len(self._bounds)
        total, self._sum = self._sum, 0.0
        if not any(counts):
            return
        for bucket, count in zip(self._target._buckets, counts, strict=True):
            if count:
                bucket.inc(count)
        self._target._sum.inc(total)

    def _start_flusher(self) -> None:
        with self._starting:
            if self._flusher is not None:
                return
            # A greenlet under gevent's monkey patching, a thread otherwise.
            self._flusher = threading.Thread(target=self._flush_forever, name="qa-notify-metrics", daemon=True)
        self._flusher.start()
        atexit.register(self.flush)  # the last second's, when the process stops

    def _flush_forever(self) -> None:
        while True:
            time.sleep(self.FLUSH_SECONDS)
            self.flush()


STREAM_SENT = BulkHistogram(REDIS_TO_STREAM)


class StreamGauges:
    """A web process's live figures, one series per process (``pid``) in multiprocess mode.

    Gone with the process (``liveall``): a process that exits or is killed stops counting.
    Created only by processes that serve streams, so workers show no zero series.
    """

    def __init__(self) -> None:
        self.open_streams = Gauge(
            "qa_notify_open_streams", "Open SSE streams, per web process.",
            multiprocess_mode="liveall", registry=PROCESS,
        )  # fmt: skip
        self.stream_users = Gauge(
            "qa_notify_stream_users", "Users with at least one open stream, per web process.",
            multiprocess_mode="liveall", registry=PROCESS,
        )  # fmt: skip
        self.hub_connected = Gauge(
            "qa_notify_hub_connected", "1 when every Redis subscriber connection the web process needs is up.",
            multiprocess_mode="liveall", registry=PROCESS,
        )  # fmt: skip
        self.hub_connections = Gauge(
            "qa_notify_hub_connections", "Redis subscriber connections of the web process (one per master in use).",
            multiprocess_mode="liveall", registry=PROCESS,
        )  # fmt: skip

    def opened(self, first_of_user: bool) -> None:
        """A stream opened (the user's first in this process, or not)."""
        self.open_streams.inc()
        if first_of_user:
            self.stream_users.inc()

    def closed(self, last_of_user: bool) -> None:
        """A stream closed (the user's last in this process, or not)."""
        self.open_streams.dec()
        if last_of_user:
            self.stream_users.dec()

    def connections(self, connected: bool, count: int) -> None:
        """The hub's subscriber connections changed."""
        self.hub_connected.set(1 if connected else 0)
        self.hub_connections.set(count)


_stream_gauges: StreamGauges | None = None
_gauges_lock = threading.Lock()


def stream_gauges() -> StreamGauges:
    """Return this process's stream gauges, creating them (at zero) on first use."""
    global _stream_gauges
    with _gauges_lock:
        if _stream_gauges is None:
            _stream_gauges = StreamGauges()
        return _stream_gauges
