"""Turn bench/results/*.json into docs/benchmarks.md and its plots."""

from __future__ import annotations

import json
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _load(results: Path, name: str, quick: bool) -> dict | None:
    path = results / f"{name}{'-quick' if quick else ''}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _warm(lat: dict) -> str:
    """The cold first seconds, reported apart from the measured series."""
    warm = lat.get("warm_up")
    if not warm or warm.get("max_ms") is None:
        return ""
    return f"; cold first {warm['events']:,} events: p99 {warm['p99_ms']} ms, max {warm['max_ms']} ms"


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**missed**")


def write(results: Path, quick: bool = False) -> Path:
    """Write docs/benchmarks.md from whatever results exist."""
    DOCS.mkdir(exist_ok=True)
    r = {
        name: _load(results, name, quick)
        for name in (
            "fanout",
            "tasks",
            "latency",
            "latency_light",
            "broadcast",
            "capacity",
            "flask_sse",
            "broadcast_cluster",
            "latency_cluster",
        )  # fmt: skip
    }
    rows = []
    if r["fanout"]:
        f = r["fanout"]
        rows.append(
            (
                f"Fan-out: one answer, {f['recipients'] - 1:,} followers, 1 worker (-c 2)",
                "< 10 s",
                f"{f['seconds']} s ({f['recipients_per_second']:,} recipients/s)",
                _met(f["seconds"] < 10),
            )
        )
        rows.append(
            (
                "Redis round trips per recipient (one pipeline of Lua calls per batch)",
                "-",
                f"{f['redis_round_trips_per_recipient']} ({f['lua_calls']:,} Lua calls in them)",
                "n/a",
            )
        )
    if r["tasks"]:
        t = r["tasks"]
        rows.append(
            (
                f"Many small events end to end ({t['answers']:,} answers through `post_answer`, 1 follower each)",
                ">= 1,000 answers/s",
                f"{t['answers_per_second']:,} answers/s ({t['tasks_enqueued']:,} tasks; one producer posts"
                f" {t['posted_per_second']:,}/s)",
                _met(t["answers_per_second"] >= 1000),
            )
        )
        rows.append(
            (
                f"Same, a backlog of {t['answers']:,} answers drained by the worker alone",
                "-",
                f"{t['backlog_events_per_second']:,} events/s ({t['backlog_tasks_enqueued']:,} tasks)",
                "n/a",
            )
        )
    if r["latency"]:
        lat = r["latency"]
        rows.append(
            (
                f"Answer POST -> new_answers, {lat['streams']:,} streams, {lat['rate_per_second']:g}/s",
                "p99 <= 50 ms",
                f"p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms ({lat['received']}/{lat['answers']} received)"
                + _warm(lat),
                _met(lat["p99_ms"] is not None and lat["p99_ms"] <= 50),
            )
        )
    if r["latency_light"]:
        lat = r["latency_light"]
        rows.append(
            (
                f"Same, at a rate this machine sustains ({lat['rate_per_second']:g}/s)",
                "-",
                f"p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms ({lat['received']}/{lat['answers']} received)"
                + _warm(lat),
                "n/a",
            )
        )
    if r["broadcast"]:
        b = r["broadcast"]
        rows.append(
            (
                f"Broadcast to {b['connected']:,} open streams, one web process",
                "last <= 1 s",
                f"median {b['median_seconds']} s, last {b['last_seconds']} s ({b['received']:,} received)",
                _met(b["last_seconds"] is not None and b["last_seconds"] <= 1.0 and b["received"] == b["streams"]),
            )
        )
    if r["capacity"]:
        c = r["capacity"]
        rows.append(
            (
                "Streams one web process holds (heartbeats flowing)",
                "19,000",
                f"{c['open_after_hold']:,} of {c['streams_requested']:,}",
                _met(c["open_after_hold"] >= 19_000),
            )
        )
        rows.append(
            (
                "RSS per idle stream",
                "<= 20 KB",
                f"{c['rss_per_stream_kb']} KB ({c['rss_before_mb']} -> {c['rss_after_mb']} MB)",
                _met(c["rss_per_stream_kb"] <= 20),
            )
        )
        rows.append(
            (
                "Redis connections of that web process",
                "<= 4",
                str(c["redis_connections_web_process"]),
                _met(c["redis_connections_web_process"] <= 4),
            )
        )
    machine = next((v["run"]["machine"] for v in r.values() if v), {})
    lines = [
        "# Benchmarks",
        "",
        f"Measured with `make bench`{' --quick' if quick else ''} on {machine.get('cores')} cores, {machine.get('ram_gib')} GiB, Python {machine.get('python')}:",
        "everything on one machine (the load generators, Redis, the worker and the web process share the 2 cores),",
        "embedded Valkey 8 and SQLite. Raw figures: `bench/results/*.json`.",
        "",
        "| scenario | target | measured | |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        "",
    ]
    if r["latency"] and r["latency"].get("latencies_ms"):
        _plot_latency(r["latency"]["latencies_ms"])
        lines += ["![latency CDF](latency-cdf.png)", ""]
    if r["broadcast_cluster"] or r["latency_cluster"]:
        lines += _cluster_comparison(r)
    if r["flask_sse"]:
        lines += _comparison(r)
    out = DOCS / "benchmarks.md"
    old = out.read_text() if out.exists() else ""
    kept = old.split(HAND_WRITTEN, 1)[1] if HAND_WRITTEN in old else ""
    out.write_text("\n".join(lines) + _NOTES + "\n" + HAND_WRITTEN + kept)
    return out


# Everything below this line in docs/benchmarks.md is written by hand and kept on rewrite.
HAND_WRITTEN = "<!-- analysis below: written by hand, kept when bench/report.py rewrites this page -->\n"


def _ratio(ours: float | None, theirs: float | None) -> str:
    if not ours or not theirs:
        return "-"
    ratio = ours / theirs
    return f"1/{round(1 / ratio):,}" if ratio < 0.01 else f"{ratio:.2f}x"


def _lat(figures: dict | None) -> str:
    if not figures or figures.get("p50_ms") is None:
        return "none received"
    return f"p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms ({figures['received']:,} received)"


def _cluster_comparison(r: dict) -> list[str]:
    """One Valkey and one web process against a 3-master cluster with two web processes behind nginx."""
    rows = []
    for name, what in (("broadcast", "Broadcast to every open stream"), ("latency", "Answer POST -> new_answers")):
        one, many = r.get(name), r.get(f"{name}_cluster")
        if not (one and many):
            continue
        if name == "broadcast":
            cells = [f"last {x['last_seconds']} s ({x['received']:,} of {x['streams']:,})" for x in (one, many)]
        else:
            cells = [_lat(x) for x in (one, many)]
        rows.append(f"| {what} ({many['streams']:,} streams) | {cells[0]} | {cells[1]} |")
    conns = [x.get("redis_connections_per_web_process") for x in (r.get("broadcast"), r.get("broadcast_cluster")) if x]
    if len(conns) == 2 and None not in conns:
        rows.append(f"| Redis connections per web process | {conns[0]:g} | {conns[1]:g} (over 3 masters) |")
    return [
        "## One Valkey or a 3-master cluster",
        "",
        "The same scenarios on one Valkey with one web process, and on a Valkey cluster of 3 masters",
        "and 3 replicas (all on this machine) with the streams spread by nginx over two web processes;",
        "the cluster runs use RabbitMQ as Celery's broker when the machine runs one.",
        "",
        "| | one Valkey, 1 web process | 3-master cluster, 2 web processes behind nginx |",
        "|---|---|---|",
        *rows,
        "",
    ]


def _comparison(r: dict) -> list[str]:
    """The qa_notify / flask-sse table: same machine, same run, same load generator."""
    fs = r["flask_sse"]
    rows = []
    c, fc = r["capacity"], fs["capacity"]
    if c:
        rows += [
            ("Idle streams one process holds", f"{c['open_after_hold']:,}", f"{fc['open_after_hold']:,}",
             _ratio(c["open_after_hold"], fc["open_after_hold"])),
            ("RSS per idle stream", f"{c['rss_per_stream_kb']} KB", f"{fc['rss_per_stream_kb']} KB",
             _ratio(c["rss_per_stream_kb"], fc["rss_per_stream_kb"])),
            ("Redis connections for those streams", str(c["redis_connections_web_process"]),
             f"{fc['redis_connections_web_process']:,}",
             _ratio(c["redis_connections_web_process"], fc["redis_connections_web_process"])),
        ]  # fmt: skip
    b, fb = r["broadcast"], fs["broadcast"]
    if b:
        rows.append(
            (f"Broadcast to {b['streams']:,} streams: reached, last arrival",
             f"{b['received']:,}, {b['last_seconds']} s", f"{fb['received']:,}, {fb['last_seconds']} s",
             _ratio(b["last_seconds"], fb["last_seconds"]) + " time")
        )  # fmt: skip
    if r["latency"]:
        lat = r["latency"]
        rows.append(
            (f"HTTP POST -> event, {lat['streams']:,} streams, {lat['rate_per_second']:g}/s "
             "(qa_notify: an answer through database and worker; flask-sse: a bare publish)",
             _lat(lat), _lat(fs["latency_http"]), _ratio(lat["p99_ms"], fs["latency_http"].get("p99_ms")) + " p99")
        )  # fmt: skip
    sp = fs["stream_path"]
    rows.append(
        (f"Stream path alone: event written into Redis -> received, {sp['qa_notify']['streams']:,} streams",
         _lat(sp["qa_notify"]), _lat(sp["flask_sse"]),
         _ratio(sp["qa_notify"].get("p99_ms"), sp["flask_sse"].get("p99_ms")) + " p99")
    )  # fmt: skip
    rows += [
        ("Login; a client sees only its own events", "yes", "no: any client may read any channel", ""),
        ("Replay after a reconnect (Last-Event-ID)", "yes", "no", ""),
        ("Heartbeats (dead clients noticed, proxies kept open)", "yes", "no", ""),
    ]
    return [
        "## qa_notify and flask-sse 1.0: same machine, same run, same load generator",
        "",
        "flask-sse runs under `gunicorn -k gevent` (one worker, worker connections and open files",
        "raised to 20,000), one channel per user. Ratios are qa_notify / flask-sse.",
        "",
        "| | qa_notify | flask-sse 1.0 | ratio |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        "",
    ]


def _plot_latency(latencies: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(latencies)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(ordered, [i / len(ordered) for i in range(len(ordered))])
    ax.set_xlabel("answer POST -> event received (ms)")
    ax.set_ylabel("fraction of events")
    ax.set_title("End-to-end latency")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(DOCS / "latency-cdf.png", dpi=100)
    plt.close(fig)


_NOTES = """
## How each figure is taken

- **Fan-out**: followers are inserted directly; the answer is posted through the domain
  code (outbox row + commit + enqueue, as the API does); the clock stops when the worker
  marks the outbox row delivered, which happens after the last batch's inbox rows are
  committed and its Lua call (XADD + PUBLISH per user) returned. Inbox rows and stream
  entries are then counted to check every recipient got exactly one.
- **Latency**: each follower has a stream open through `bench.sse_clients` (gevent, raw
  sockets, separate processes); a driver POSTs answers over HTTP at a fixed rate; latency
  is the receive time minus the send time, on the same clock. The first 2 seconds of
  traffic at the same rate warm up the worker processes, connection pools and caches;
  they are reported apart ("cold"), and the measured series follows without a pause.
  The POST's own response time and each process's CPU seconds over the run (web, worker
  with its pool, Redis, load generators, the driver) are recorded with it.
- **Many small events**: 1,000 users each ask a question (and follow it); one answerer
  posts 2,000 answers round-robin over them through `post_answer`, the domain function
  the API calls (not over HTTP), back to back from one process, so each answer has one
  follower. *End to end*: the worker (-c 2) runs while they are posted; answers per second
  from the first post to the last outbox row marked delivered (the worker's own
  timestamp, after the push returned). *Backlog*: 2,000 answers are committed before the
  worker starts; events per second from its first inbox row to its last row delivered.
  Tasks are the broker's messages (LPUSH on the Redis broker); every follower's inbox and
  stream are counted to hold each answer exactly once.
- **Broadcast**: the broadcast is sent through the domain code; the clock runs until the
  last stream has the event.
- **Connects**: the broadcast and capacity scenarios open streams at 1,000 per second
  (`CONNECT_RATE` in `bench/scenarios.py`), as browsers arriving briskly rather than all
  in the same millisecond.
- **Capacity**: streams are opened, held through several heartbeats, then
  `/metrics` says how many are still open; RSS is the web process's VmRSS growth divided
  by the streams; Redis connections are the server's `connected_clients` growth.
- **flask-sse**: its streams send nothing until their first event (no heartbeat, no
  opening bytes), so a stream counts as open once its Redis channel is subscribed
  (`PUBSUB CHANNELS`); the broadcast is one PUBLISH per user channel in one pipeline; the
  stream-path rows write the event straight into Redis for both (qa_notify: the worker's
  Lua call for one recipient; flask-sse: what `sse.publish` sends), at the same rate.
"""
