"""Turn bench/results/*.json into docs/benchmarks.md and its plots."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _load(results: Path, name: str, quick: bool) -> list[dict]:
    """Every run of a scenario in its results file (older files hold a single run)."""
    path = results / f"{name}{'-quick' if quick else ''}.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    return data.get("runs", [data])


def _span(runs: list[dict], get, fmt: str = "{:,}") -> str:
    """A figure over the runs: one value when they agree (as printed), else lowest-highest."""
    values = [v for v in (_get(run, get) for run in runs) if v is not None]
    if not values:
        return "-"
    low, high = fmt.format(min(values)), fmt.format(max(values))
    return low if low == high else f"{low}-{high}"


def _get(run: dict, get):
    """``run[get]`` for a key, ``get(run)`` for a function; None where the run lacks it."""
    try:
        return get(run) if callable(get) else run[get]
    except (KeyError, TypeError):
        return None


def _over(runs: list[dict]) -> str:
    """How many runs a figure spans, for the reader to judge its spread."""
    return "one run" if len(runs) == 1 else f"{len(runs)} runs"


def _met(runs: list[dict], ok) -> str:
    """Met when every run met the target; says how many did when only some."""
    results = [bool(_get(run, ok)) for run in runs]
    if not results:
        return "n/a"
    if all(results):
        return "met"
    return "**missed**" if not any(results) else f"met in {sum(results)} of {len(results)} runs"


def _warm(runs: list[dict]) -> str:
    """The cold first seconds, reported apart from the measured series."""
    if not any(run.get("warm_up", {}).get("max_ms") is not None for run in runs):
        return ""
    return (
        f"; cold first {runs[0]['warm_up']['events']:,} events: p99 {_span(runs, lambda r: r['warm_up']['p99_ms'])} ms"
    )


def _lat(runs: list[dict], get=lambda r: r) -> str:
    """p50 and p99 over the runs, and how many events arrived."""
    picked = [x for x in (_get(run, get) for run in runs) if x and x.get("p50_ms") is not None]
    if not picked:
        return "none received"
    return (
        f"p50 {_span(picked, 'p50_ms', '{:,}')} ms, p99 {_span(picked, 'p99_ms', '{:,}')} ms"
        f" ({_span(picked, 'received')} received; {_over(picked)})"
    )


def _fanout_rows(runs: list[dict], million: bool = False) -> list[tuple]:
    f = runs[0]
    workers = f.get("workers", 1)
    target = 20 if million else 10
    rows = [
        (
            f"Fan-out: one answer, {f['recipients'] - 1:,} followers, {workers} worker{'s' * (workers > 1)} (-c 2)",
            f"< {target} s",
            f"{_span(runs, 'seconds', '{}')} s ({_span(runs, 'recipients_per_second')} recipients/s;"
            f" exactly one inbox row and stream entry each: {_exactly_once(runs)}; {_over(runs)})",
            _met(runs, lambda r: r["seconds"] < target),
        )
    ]
    if not million:
        rows.append(
            (
                "Redis round trips per recipient (one pipeline of Lua calls per batch)",
                "-",
                f"{_span(runs, 'redis_round_trips_per_recipient', '{}')}"
                f" ({_span(runs, 'lua_calls')} Lua calls in them)",
                "n/a",
            )
        )
    return rows


def _exactly_once(runs: list[dict]) -> str:
    ok = all(r["inbox_rows"] == r["recipients"] == r["stream_entries"] for r in runs)
    return "yes" if ok else "**no**"


def _producers(run: dict) -> str:
    """Who posted the answers: runs before 2026-12-02 had one process posting back to back."""
    count = run.get("producers", 1)
    return "one producer" if count == 1 else f"{count} producer processes"


def _tasks_rows(runs: list[dict]) -> list[tuple]:
    t = runs[0]
    return [
        (
            f"Many small events end to end ({t['answers']:,} answers through `post_answer`, 1 follower each)",
            ">= 1,000 answers/s",
            f"{_span(runs, 'answers_per_second')} answers/s ({_span(runs, 'tasks_enqueued')} tasks;"
            f" {_producers(t)} post {_span(runs, 'posted_per_second')}/s, the last delivered"
            f" {_span(runs, 'lag_after_last_post_ms', '{}')} ms after the last post; CPU per answer"
            f" {_span(runs, 'producer_cpu_ms_per_answer', '{}')} ms producing,"
            f" {_span(runs, 'worker_cpu_ms_per_answer', '{}')} ms in the worker; {_over(runs)})",
            _met(runs, lambda r: r["answers_per_second"] >= 1000),
        ),
        (
            f"Same, a backlog of {t['answers']:,} answers drained by the worker alone",
            "-",
            f"{_span(runs, 'backlog_events_per_second')} events/s ({_span(runs, 'backlog_tasks_enqueued')} tasks;"
            f" {_over(runs)})",
            "n/a",
        ),
    ]


def _latency_rows(runs: list[dict], light: list[dict], deployed: list[dict]) -> list[tuple]:
    rows = []
    if deployed:
        lat = deployed[0]
        rows.append(
            (
                f"Answer POST -> new_answers, {lat['streams']:,} streams, {lat['rate_per_second']:g}/s, as deployed"
                f" ({lat['web_processes']} web processes, one per core, behind nginx)",
                "p99 <= 50 ms",
                _lat(deployed) + _warm(deployed),
                _met(deployed, lambda r: r["p99_ms"] is not None and r["p99_ms"] <= 50),
            )
        )
    if runs:
        lat = runs[0]
        rows.append(
            (
                f"Answer POST -> new_answers, {lat['streams']:,} streams, {lat['rate_per_second']:g}/s, one web process",
                "-" if deployed else "p99 <= 50 ms",
                _lat(runs) + _warm(runs),
                "n/a" if deployed else _met(runs, lambda r: r["p99_ms"] is not None and r["p99_ms"] <= 50),
            )
        )
    if light:
        rows.append(
            (
                f"Same, at a light rate ({light[0]['rate_per_second']:g}/s)",
                "-",
                _lat(light) + _warm(light),
                "n/a",
            )
        )
    return rows


def _broadcast_rows(runs: list[dict]) -> list[tuple]:
    return [
        (
            f"Broadcast to {runs[0]['streams']:,} open streams, one web process",
            "last <= 1 s",
            f"median {_span(runs, 'median_seconds', '{}')} s, last {_span(runs, 'last_seconds', '{}')} s"
            f" ({_span(runs, 'received')} of {_span(runs, 'connected')} received; {_over(runs)})",
            _met(
                runs,
                lambda r: r["last_seconds"] is not None and r["last_seconds"] <= 1.0 and r["received"] == r["streams"],
            ),
        )
    ]


def _capacity_rows(by_rate: dict[str, list[dict]]) -> list[tuple]:
    """Streams one process holds and RSS per stream, at each connect rate measured."""
    rows = []
    for label, runs in by_rate.items():
        if not runs:
            continue
        rate = f"opened at {runs[0]['connect_rate_per_second']:,}/s"
        rows += [
            (
                f"Streams one web process holds, {rate} (heartbeats flowing)",
                ">= 19,000",
                f"{_span(runs, 'open_after_hold')} of {_span(runs, 'streams_requested')} ({_over(runs)})",
                _met(runs, lambda r: r["open_after_hold"] >= 19_000),
            ),
            (
                f"RSS per idle stream, {rate}",
                "<= 16 KB",
                f"{_span(runs, 'rss_per_stream_kb', '{}')} KB ({_over(runs)})",
                _met(runs, lambda r: r["rss_per_stream_kb"] <= 16),
            ),
        ]
        if label == "capacity":
            rows.append(
                (
                    "Redis connections of that web process",
                    "<= 4",
                    _span(runs, "redis_connections_web_process"),
                    _met(runs, lambda r: r["redis_connections_web_process"] <= 4),
                )
            )
    return rows


def _machine_rows(runs: list[dict]) -> list[tuple]:
    m = runs[0]
    timed = [r for r in runs if r.get("broadcast_last_seconds") is not None] or runs  # runs whose broadcast counts
    return [
        (
            f"Streams one machine holds: {m['web_processes']} web processes behind nginx, opened at"
            f" {m['connect_rate_per_second']:,}/s",
            ">= 90,000",
            f"{_span(runs, 'open_streams_metrics_total')} of {_span(runs, 'streams_requested')}"
            f" (connect errors {_span(runs, 'connect_errors')}, refused after the storm"
            f" {_span(runs, 'refused_after_storm')}; web {_span(runs, 'web_rss_per_stream_kb', '{}')} KB"
            f" + nginx {_span(runs, 'nginx_rss_per_stream_kb', '{}')} KB per stream; {_over(runs)})",
            _met(runs, lambda r: r["open_streams_metrics_total"] >= 90_000),
        ),
        (
            "Broadcast to every one of them",
            "last <= 2 s",
            f"first {_span(timed, 'broadcast_first_seconds', '{}')} s, median"
            f" {_span(timed, 'broadcast_median_seconds', '{}')} s, last {_span(timed, 'broadcast_last_seconds', '{}')} s"
            f" ({_span(timed, 'broadcast_received')} received; {_over(timed)})",
            _met(
                timed,
                lambda r: (
                    r["broadcast_last_seconds"] is not None
                    and r["broadcast_last_seconds"] <= 2
                    and r["broadcast_received"] == r["open_streams_metrics_total"]
                ),
            ),
        ),
    ]


SCENARIOS = (
    "fanout",
    "fanout_million",
    "tasks",
    "latency",
    "latency_light",
    "latency_machine",
    "broadcast",
    "capacity",
    "capacity_slow",
    "capacity_fast",
    "machine",
    "flask_sse",
    "broadcast_cluster",
    "latency_cluster",
)


def _rows(r: dict[str, list[dict]]) -> list[tuple]:
    rows = []
    if r["fanout"]:
        rows += _fanout_rows(r["fanout"])
    if r["fanout_million"]:
        rows += _fanout_rows(r["fanout_million"], million=True)
    if r["tasks"]:
        rows += _tasks_rows(r["tasks"])
    rows += _latency_rows(r["latency"], r["latency_light"], r["latency_machine"])
    if r["broadcast"]:
        rows += _broadcast_rows(r["broadcast"])
    rows += _capacity_rows({name: r[name] for name in ("capacity", "capacity_slow", "capacity_fast")})
    if r["machine"]:
        rows += _machine_rows(r["machine"])
    return rows


def write(results: Path, quick: bool = False) -> Path:
    """Write docs/benchmarks.md from whatever results exist."""
    DOCS.mkdir(exist_ok=True)
    r = {name: _load(results, name, quick) for name in SCENARIOS}
    machine = next((runs[0]["run"]["machine"] for runs in r.values() if runs), {})
    dates = sorted({run["run"]["date"] for runs in r.values() for run in runs})
    lines = [
        "# Benchmarks",
        "",
        f"Measured with `make bench`{' --quick' if quick else ''} on {machine.get('cores')} cores,"
        f" {machine.get('ram_gib')} GiB, Python {machine.get('python')}, on {', '.join(dates)}:",
        "everything on one machine (the load generators, Redis, the worker and the web processes share",
        "the cores), embedded Valkey 8 and SQLite. Each scenario runs twice, alternating with the others;",
        "a figure given as low-high spans the runs. Raw figures, with each run's load average before it:",
        "`bench/results/*.json`.",
        "",
        "| scenario | target | measured | |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in _rows(r)],
        "",
    ]
    series = [run["latencies_ms"] for run in r["latency"] if run.get("latencies_ms")]
    if series:
        _plot_latency(series)
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


def _ratio(ours: list, theirs: list) -> str:
    """qa_notify / flask-sse from the medians of each side's runs."""
    ours, theirs = [v for v in ours if v], [v for v in theirs if v]
    if not ours or not theirs:
        return "-"
    ratio = statistics.median(ours) / statistics.median(theirs)
    return f"1/{round(1 / ratio):,}" if ratio < 0.01 else f"{ratio:.2f}x"


def _values(runs: list[dict], get) -> list:
    return [v for v in (_get(run, get) for run in runs) if v is not None]


def _cluster_comparison(r: dict) -> list[str]:
    """One Valkey and one web process against a 3-master cluster with two web processes behind nginx."""
    rows = []
    for name, what in (("broadcast", "Broadcast to every open stream"), ("latency", "Answer POST -> new_answers")):
        one, many = r.get(name), r.get(f"{name}_cluster")
        if not (one and many):
            continue
        if name == "broadcast":
            cells = [
                f"last {_span(x, 'last_seconds', '{}')} s ({_span(x, 'received')} of {_span(x, 'streams')}; {_over(x)})"
                for x in (one, many)
            ]
        else:
            cells = [_lat(x) for x in (one, many)]
        rows.append(f"| {what} ({many[0]['streams']:,} streams) | {cells[0]} | {cells[1]} |")
    conns = [r.get(name) for name in ("broadcast", "broadcast_cluster")]
    if all(conns):
        one, many = (_span(x, "redis_connections_per_web_process", "{:g}") for x in conns)
        rows.append(f"| Redis connections per web process | {one} | {many} (over 3 masters) |")
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
    """The qa_notify / flask-sse table: same machine, same runs, same load generator."""
    fs = r["flask_sse"]
    rows = []

    def side(runs: list[dict], part: str, key: str, fmt: str = "{:,}") -> tuple[str, list]:
        return _span(runs, lambda x: x[part][key], fmt), _values(runs, lambda x: x[part][key])

    cap = [{"capacity": run} for run in r["capacity"]]
    if cap:
        for what, key, fmt in (
            ("Idle streams one process holds", "open_after_hold", "{:,}"),
            ("RSS per idle stream (KB)", "rss_per_stream_kb", "{}"),
            ("Redis connections for those streams", "redis_connections_web_process", "{:,}"),
        ):
            (ours, ov), (theirs, tv) = side(cap, "capacity", key, fmt), side(fs, "capacity", key, fmt)
            rows.append((what, ours, theirs, _ratio(ov, tv)))
    if r["broadcast"]:
        b = [{"broadcast": run} for run in r["broadcast"]]
        (ours, ov), (theirs, tv) = (
            side(b, "broadcast", "last_seconds", "{}"),
            side(fs, "broadcast", "last_seconds", "{}"),
        )
        rows.append((f"Broadcast to {r['broadcast'][0]['streams']:,} streams: last arrival (s)", ours, theirs,
                     _ratio(ov, tv) + " time"))  # fmt: skip
    if r["latency"]:
        lat = r["latency"]
        rows.append(
            (f"HTTP POST -> event, {lat[0]['streams']:,} streams, {lat[0]['rate_per_second']:g}/s "
             "(qa_notify: an answer through database and worker; flask-sse: a bare publish)",
             _lat(lat), _lat(fs, lambda x: x["latency_http"]),
             _ratio(_values(lat, "p99_ms"), _values(fs, lambda x: x["latency_http"]["p99_ms"])) + " p99")
        )  # fmt: skip
    ours_path, theirs_path = (lambda x: x["stream_path"]["qa_notify"]), (lambda x: x["stream_path"]["flask_sse"])
    rows.append(
        (f"Stream path alone: event written into Redis -> received, {fs[0]['stream_path']['qa_notify']['streams']:,} streams",
         _lat(fs, ours_path), _lat(fs, theirs_path),
         _ratio(_values(fs, lambda x: x["stream_path"]["qa_notify"]["p99_ms"]),
                _values(fs, lambda x: x["stream_path"]["flask_sse"]["p99_ms"])) + " p99")
    )  # fmt: skip
    rows += [
        ("Login; a client sees only its own events", "yes", "no: any client may read any channel", ""),
        ("Replay after a reconnect (Last-Event-ID)", "yes", "no", ""),
        ("Heartbeats (dead clients noticed, proxies kept open)", "yes", "no", ""),
    ]
    same_day = {run["run"]["date"] for run in fs} == {run["run"]["date"] for run in r["capacity"] + r["latency"]}
    return [
        "## qa_notify and flask-sse 1.0: same machine, same load generator",
        "",
        "flask-sse runs under `gunicorn -k gevent` (one worker, worker connections and open files",
        "raised to 20,000), one channel per user. Ratios are qa_notify / flask-sse, from the medians",
        "of each side's runs."
        + ("" if same_day else " **The two sides were measured on different days: compare with care.**"),
        "",
        "| | qa_notify | flask-sse 1.0 | ratio |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        "",
    ]


def _plot_latency(series: list[list[float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for n, latencies in enumerate(series, 1):
        ordered = sorted(latencies)
        ax.plot(ordered, [i / len(ordered) for i in range(len(ordered))], label=f"run {n}")
    ax.set_xlabel("answer POST -> event received (ms)")
    ax.set_ylabel("fraction of events")
    ax.set_title("End-to-end latency")
    ax.grid(True, alpha=0.3)
    if len(series) > 1:
        ax.legend()
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
- **Many small events**: 1,000 users each ask a question (and follow it); 2,000 answers
  are posted round-robin over them through `post_answer`, the domain function the API
  calls (not over HTTP), so each answer has one follower. Since 2026-12-02 they come from
  4 producer processes at once (`bench/producers.py`), each posting its share as a web
  process would, one app context per answer with its user and question read in it:
  production runs several web processes, and one process posting back to back (as
  before, in one long session) measured that process's CPU, not the site's. *End to
  end*: the worker (-c 2) runs while they are posted; answers per second from the first
  post to the last outbox row marked delivered (the worker's own timestamp, after the
  push returned), with the CPU seconds per answer of the producers and of the worker (its
  pool included). *Backlog*: 2,000 answers are committed before the worker starts; events
  per second from its first inbox row to its last row delivered. Tasks are the broker's
  messages (LPUSH on the Redis broker); every follower's inbox and stream are counted to
  hold each answer exactly once.
- **Broadcast**: the broadcast is sent through the domain code; the clock runs until the
  last stream has the event. Since 2026-12-01 a broadcast is written once (one broadcast
  stream entry and one publish that every web process hears, then the inbox rows by
  `INSERT ... SELECT`); earlier figures are of one XADD + publish per user.
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
