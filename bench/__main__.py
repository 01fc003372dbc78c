"""Run the benchmarks and write bench/results/*.json and docs/benchmarks.md.

``python -m bench`` runs everything at full size, twice, the second round after the first
(so a scenario's two runs are minutes apart, not back to back), and the docs give each
figure's spread over the runs; ``--runs N`` changes how many. ``python -m bench --quick``
runs small versions once (their figures stay out of the docs); ``--only NAME`` runs one
scenario (repeatable). A results file holds the runs of its scenario's last invocation.
``BENCH_DATABASE_URL=postgresql://...`` runs against that PostgreSQL database instead of a
SQLite file (it is emptied first: give it one of its own); its results go to
``<scenario>-postgresql.json`` and stay out of the docs' generated tables.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time
from pathlib import Path

from . import compare, report, scenarios

RESULTS = Path(__file__).resolve().parent / "results"

FULL = {
    "fanout": {"followers": 100_000},
    "fanout_million": {"followers": 1_000_000, "workers": 2},
    "tasks": {"count": 2000, "questions": 1000, "producers": 4},
    "latency": {"streams": 1000, "rate": 100, "seconds": 20},
    "latency_light": {"streams": 1000, "rate": 25, "seconds": 20},
    "latency_machine": {"streams": 1000, "rate": 100, "seconds": 20},
    "broadcast": {"streams": 10_000},
    "capacity": {"streams": 19_000},
    "capacity_slow": {"streams": 19_000, "connect_rate": 200},
    "capacity_fast": {"streams": 19_000, "connect_rate": 2000},
    "flask_sse": {},
    "broadcast_cluster": {"streams": 10_000},
    "latency_cluster": {"streams": 1000, "rate": 100, "seconds": 20},
    "machine": {"streams": 90_000, "connect_rate": 1000},
}
QUICK = {
    "fanout": {"followers": 10_000},
    "fanout_million": {"followers": 20_000, "workers": 2},
    "tasks": {"count": 300, "questions": 200, "producers": 2},
    "latency": {"streams": 200, "rate": 50, "seconds": 5},
    "latency_light": {"streams": 200, "rate": 10, "seconds": 5},
    "latency_machine": {"streams": 200, "rate": 50, "seconds": 5},
    "broadcast": {"streams": 1000},
    "capacity": {"streams": 2000, "hold_seconds": 6},
    "capacity_slow": {"streams": 2000, "hold_seconds": 6, "connect_rate": 200},
    "capacity_fast": {"streams": 2000, "hold_seconds": 6, "connect_rate": 2000},
    "flask_sse": {
        "latency_streams": 200,
        "rate": 50,
        "seconds": 5,
        "broadcast_streams": 1000,
        "capacity_streams": 2000,
    },
    "broadcast_cluster": {"streams": 1000},
    "latency_cluster": {"streams": 200, "rate": 50, "seconds": 5},
    "machine": {"streams": 4000, "connect_rate": 1000, "hold_seconds": 16},
}
RUNNERS = {
    "fanout": scenarios.fanout,
    "fanout_million": scenarios.fanout,
    "tasks": scenarios.small_events,
    "latency": scenarios.latency,
    "latency_light": scenarios.latency,
    # As deployed: one web process per core (2 here) behind nginx, the answers and the streams
    # spread over them; the two above load one process with both.
    "latency_machine": functools.partial(scenarios.latency, web_processes=2),
    "broadcast": scenarios.broadcast,
    "capacity": scenarios.capacity,
    # The same figure must not depend on how fast the browsers arrive.
    "capacity_slow": scenarios.capacity,
    "capacity_fast": scenarios.capacity,
    "flask_sse": compare.flask_sse,
    # The same, on a 3-master Valkey cluster with the streams spread over two web processes by nginx.
    "broadcast_cluster": functools.partial(scenarios.broadcast, cluster=True, web_processes=2),
    "latency_cluster": functools.partial(scenarios.latency, cluster=True, web_processes=2),
    # One whole machine as deployed: web processes behind nginx, a worker, Valkey.
    "machine": scenarios.whole_machine,
}


def machine() -> dict:
    mem = next(
        (line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), "0"
    )
    return {"cores": os.cpu_count(), "ram_gib": round(int(mem) / 1024 / 1024, 1), "python": platform.python_version()}


def _without_samples(result):
    """The result without its per-event latency lists, for the console."""
    if isinstance(result, dict):
        return {k: _without_samples(v) for k, v in result.items() if k != "latencies_ms"}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="small sizes, about 3 minutes; docs are not rewritten")
    parser.add_argument("--only", choices=sorted(RUNNERS), action="append", help="run just this scenario (repeatable)")
    parser.add_argument("--runs", type=int, help="rounds over the scenarios (default 2; 1 with --quick)")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    rounds = args.runs or (1 if args.quick else 2)
    if rounds < 1:
        parser.error("--runs must be at least 1")
    RESULTS.mkdir(exist_ok=True)
    names = args.only or list(RUNNERS)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for round_ in range(1, rounds + 1):
        for name in names:
            runs[name].append(run_one(name, sizes[name], args.quick, round_))
            path = RESULTS / f"{name}{'-quick' if args.quick else ''}{_database_suffix()}.json"
            path.write_text(json.dumps({"runs": runs[name]}, indent=1) + "\n")
    if args.quick or _database_suffix():
        print("quick or external-database run: figures in bench/results/; docs/benchmarks.md is left as it is")
    else:
        report.write(RESULTS)


def _database_suffix() -> str:
    """``-postgresql`` when ``BENCH_DATABASE_URL`` points the run at PostgreSQL, else nothing (SQLite)."""
    return "-postgresql" if os.environ.get("BENCH_DATABASE_URL") else ""


def run_one(name: str, size: dict, quick: bool, round_: int) -> dict:
    """Run one scenario once; return its figures with how, when and on what it ran."""
    load = round(os.getloadavg()[0], 2)
    print(f"== {name} {size} (round {round_}, load {load})", flush=True)
    started = time.monotonic()
    result = RUNNERS[name](**size)
    result["run"] = {
        "quick": quick,
        "round": round_,
        "load_average_before": load,
        "wall_seconds": round(time.monotonic() - started, 1),
        "machine": machine(),
        "database": "postgresql" if _database_suffix() else "sqlite",
        "date": time.strftime("%Y-%m-%d"),
        "time": time.strftime("%H:%M"),
    }
    print(json.dumps(_without_samples(result)), flush=True)
    return result


if __name__ == "__main__":
    main()
