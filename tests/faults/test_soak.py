"""Soak: 1,000 open streams, steady events and connection churn for a few minutes.

After a warm-up the web process's memory may grow by less than 5%, and once the churn
stops it holds no more open files and no more Redis connections than it did after the
warm-up. Every one of the 1,000 streams gets every event exactly once, in order.
``QA_SOAK_SECONDS`` sets the measured part (default 90 s; the warm-up adds 30 s).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from bench.clients import ClientFleet
from bench.users import session_cookies

from .conftest import record

pytestmark = pytest.mark.faults

STREAMS = 1000
CHURN = 50  # streams opened and closed again every few seconds, beside the 1,000
WARM_UP_SECONDS = 30
SOAK_SECONDS = float(os.environ.get("QA_SOAK_SECONDS", "90"))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.timeout(WARM_UP_SECONDS + SOAK_SECONDS + 300)
def test_soak_memory_files_and_connections_stay_flat(fault_stack):
    import redis

    stack = fault_stack
    everyone = stack.users(STREAMS + CHURN)
    ids, churn_ids = everyone[:STREAMS], everyone[STREAMS:]
    web = stack.start_web(SSE_HEARTBEAT_SECONDS="5")
    pid = web.process.pid
    fleet = ClientFleet(web.port, session_cookies(stack.app, ids), seconds=WARM_UP_SECONDS + SOAK_SECONDS + 120)
    fleet.wait_ready(timeout=120)
    assert fleet.ready == STREAMS, f"only {fleet.ready} streams opened: {fleet.error_samples}"

    stop_churn = threading.Event()
    churning = threading.Lock()  # held while churned streams are open
    churned = [0]

    def churn():
        churn_cookies = session_cookies(stack.app, churn_ids)
        while not stop_churn.is_set():
            with churning:
                extra = ClientFleet(web.port, churn_cookies, seconds=30)
                extra.wait_ready(timeout=30)
                churned[0] += extra.ready
                time.sleep(2)
                extra.close()
            time.sleep(0.5)

    def measure():
        """Memory, open files and Redis connections with only the 1,000 streams open."""
        with churning:
            time.sleep(3)  # the churned streams are closed and reaped
            return rss_kb(pid), open_files(pid), r.info("clients")["connected_clients"]

    churner = threading.Thread(target=churn, daemon=True)
    churner.start()
    r = redis.Redis.from_url(stack.redis_url)
    sent = 0
    started = time.monotonic()
    baseline = None
    while time.monotonic() - started < WARM_UP_SECONDS + SOAK_SECONDS:
        stack.publish(everyone, sent)
        sent += 1
        if baseline is None and time.monotonic() - started >= WARM_UP_SECONDS:
            baseline = measure()
        time.sleep(0.5)
    final = measure()
    stop_churn.set()
    churner.join(60)

    deadline = time.monotonic() + 30
    while len(fleet.events_of("tick")) < sent * STREAMS and time.monotonic() < deadline:
        time.sleep(0.2)
    received = defaultdict(list)
    for e in fleet.events_of("tick"):
        received[e["uid"]].append(json.loads(e["data"])["n"])
    fleet.close()
    lost = duplicated = 0
    for uid in map(str, ids):
        got = received[uid]
        assert got == sorted(got), f"user {uid}: out of order"
        lost += sent - len(set(got))
        duplicated += len(got) - len(set(got))
    growth = (final[0] - baseline[0]) / baseline[0]
    record(
        "soak",
        streams=STREAMS,
        seconds=round(WARM_UP_SECONDS + SOAK_SECONDS),
        sent=sent * STREAMS,
        received=sum(len(v) for v in received.values()),
        lost=lost,
        duplicated=duplicated,
        churned_streams=churned[0],
        rss_after_warm_up_mb=round(baseline[0] / 1024, 1),
        rss_at_end_mb=round(final[0] / 1024, 1),
        rss_growth_percent=round(growth * 100, 2),
        open_files=[baseline[1], final[1]],
        redis_connections=[baseline[2], final[2]],
    )
    assert (lost, duplicated) == (0, 0)
    assert growth < 0.05, f"RSS grew {growth:.1%} after warm-up"
    assert final[1] <= baseline[1], f"open files {baseline[1]} -> {final[1]}"
    assert final[2] <= baseline[2], f"Redis connections {baseline[2]} -> {final[2]}"
