"""The admin's live dashboard: this machine's streams, events and delivery backlog, refreshed every 2 s.

The figures are ``/metrics``' (``qa_notify.health.exposition.snapshot``), as JSON: the page
polls ``/api/admin/live`` and works out rates and percentiles from the change between
polls, so every process it reaches answers the same way.
"""

from __future__ import annotations

import socket
import time

from flask import jsonify, render_template

from ..health import exposition
from ..jsonapi import page_role_required, role_required
from . import bp

LATENCIES = {
    "outbox_to_redis": "qa_notify_outbox_to_redis_seconds",
    "redis_to_stream": "qa_notify_redis_to_stream_seconds",
}


@bp.get("/admin/live")
@page_role_required("admin")
def live_page():
    """Show the live dashboard; its script fills it in."""
    return render_template("admin/live.html")


@bp.get("/api/admin/live")
@role_required("admin")
def api_live():
    """Return this machine's live figures: streams per web process, event counts, latency
    histograms (cumulative, for the page to difference), and the delivery backlog."""
    return jsonify(live_figures(exposition.snapshot()))


def live_figures(metrics: dict[str, list[exposition.Sample]]) -> dict:
    """Shape a metrics snapshot for the live page."""
    processes = _per_process(metrics)
    return {
        "machine": socket.gethostname(),
        "at": time.time(),
        "open_streams": sum(p["open_streams"] for p in processes),
        "processes": processes,
        "events": {
            "pushed": _value(metrics, "qa_notify_events_pushed", "qa_notify_events_pushed_total") or 0,
            "sent": _value(metrics, LATENCIES["redis_to_stream"], LATENCIES["redis_to_stream"] + "_count") or 0,
        },
        "latency": {key: _buckets(metrics, name) for key, name in LATENCIES.items()},
        "outbox": {
            "undelivered": _value(metrics, "qa_notify_outbox_undelivered"),
            "oldest_age_seconds": _value(metrics, "qa_notify_outbox_oldest_age_seconds"),
            "failed": _value(metrics, "qa_notify_outbox_failed"),
        },
        "dead_letters": _value(metrics, "qa_notify_ingest_dead_letters"),
        "emails": {
            state: _value(metrics, f"qa_notify_emails_{state}") for state in ("sending", "retrying", "abandoned")
        },
    }


def _value(metrics: dict, family: str, sample: str | None = None) -> float | None:
    """The sum of a family's samples (named ``sample``, default the family); None when absent
    (a delivery count whose database or Redis did not answer)."""
    values = [s.value for s in metrics.get(family, []) if s.name == (sample or family)]
    return sum(values) if values else None


def _per_process(metrics: dict) -> list[dict]:
    """One row per web process: its open streams, users with a stream, Redis subscriber."""
    rows: dict[str, dict] = {}
    for family, key in (
        ("qa_notify_open_streams", "open_streams"),
        ("qa_notify_stream_users", "users"),
        ("qa_notify_hub_connected", "hub_connected"),
    ):
        for sample in metrics.get(family, []):
            pid = sample.labels.get("pid", "this process")  # no pid label: figures kept in memory
            rows.setdefault(pid, {"pid": pid, "open_streams": 0, "users": 0, "hub_connected": 0})[key] = sample.value
    return sorted(rows.values(), key=lambda row: str(row["pid"]))


def _buckets(metrics: dict, family: str) -> dict:
    """A histogram's cumulative bucket counts by upper bound, ``+Inf`` last, and its count."""
    pairs = sorted((float(s.labels["le"]), s.value) for s in metrics.get(family, []) if s.name == f"{family}_bucket")
    return {
        "le": [bound if bound != float("inf") else "+Inf" for bound, _ in pairs],
        "counts": [count for _, count in pairs],
    }
