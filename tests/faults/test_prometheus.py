"""A real Prometheus scraping ``make run-cluster``: the figures add up across its processes.

``manage.py run-cluster`` (two web processes behind nginx, two workers, a Valkey cluster)
runs as in ``test_run_cluster.py``, and Debian's ``prometheus`` scrapes nginx's ``/metrics``
every second, one target for the whole machine (both web ports when nginx is missing; each
answers for the machine all the same). 50 streams opened through nginx, spread by nginx over
the two processes, must be 50 in Prometheus; an answer to a followed question must show in
the latency histograms there; every query of the shipped Grafana dashboard must run. Then
everything stops, Prometheus included.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from devstack.embedded_redis import free_port

from ..live import REPO
from ..test_monitoring_config import dashboard_queries
from .test_run_cluster import START_S, STOP_S, Stream, _alive, _family, _register, _valkey_missing, _wait_until_up

pytestmark = pytest.mark.faults
STREAMS = 50
SCRAPE_S = 20  # from a change to Prometheus having scraped it (every second)


def _prometheus_binary() -> str | None:
    return shutil.which("prometheus")


class Prometheus:
    """Debian's prometheus, on a free port, with its data in a temporary directory."""

    def __init__(self, tmp: Path, targets: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp / "prometheus.yml"
        # deploy/prometheus/prometheus.yml's job, every second (JSON is YAML).
        job = {"job_name": "qa_notify", "metrics_path": "/metrics", "static_configs": [{"targets": targets}]}
        config.write_text(
            json.dumps({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "scrape_configs": [job]})
        )
        self.log = (tmp / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [_prometheus_binary(), f"--config.file={config}", f"--storage.tsdb.path={tmp / 'prometheus-data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not self._ready():
            assert self.process.poll() is None, f"prometheus exited with {self.process.returncode}"
            assert time.monotonic() < deadline, "prometheus not ready within 30 s"
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, expr: str) -> list[dict]:
        """Run an instant query; return its result vector."""
        body = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5).json()
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def value(self, expr: str) -> float | None:
        """The single value of ``expr`` now, or None while it has none."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expr: str, condition, what: str) -> float | None:
        deadline = time.monotonic() + SCRAPE_S
        while not condition(value := self.value(expr)):
            assert time.monotonic() < deadline, f"{what}: Prometheus has {expr} = {value}"
            time.sleep(0.5)
        return value

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.mark.timeout(START_S + 4 * SCRAPE_S + STOP_S + 90)
def test_prometheus_sees_the_machine_add_up_through_nginx(tmp_path):
    if _prometheus_binary() is None:
        pytest.skip("Prometheus is not installed (Debian: apt-get install prometheus)")
    if missing := _valkey_missing():
        pytest.skip(f"run-cluster needs the embedded Valkey binary: {missing}")
    if not Path("/proc/self/stat").exists():
        pytest.skip("counts the run's processes from /proc (Linux)")
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CELERY_BROKER_URL", "PORT")},
        "DATABASE_URL": f"sqlite:///{tmp_path / 'qa_notify.sqlite'}",
        "MAIL_FILE_DIR": str(tmp_path / "mail"),
        "CELERY_TASK_QUEUE": f"qa-prometheus-{os.getpid()}-{port}",
        "SECRET_KEY": "test-secret",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # run-cluster's own: <--dir>/metrics
    log_path = tmp_path / "run-cluster.log"
    started = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "manage.py"), "run-cluster", "--port", str(port),
             "--dir", str(tmp_path / "cluster-run"), "--no-seed"],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    family: dict[int, str] = {}
    clients: list[httpx.Client] = []
    prometheus = None
    try:
        layout = _wait_until_up(proc, log_path, started + START_S)
        family = _family(proc.pid)
        targets = (
            [layout.entry.removeprefix("http://")] if layout.nginx else [f"127.0.0.1:{p}" for p in layout.web_ports]
        )
        prometheus = Prometheus(tmp_path, targets)
        prometheus.wait_for("sum(up)", lambda v: v == len(targets), "every target scraped")
        assert prometheus.value("sum(qa_notify_open_streams)") == 0
        assert prometheus.value("count(qa_notify_open_streams)") == 2, "one series per web process"
        assert list((tmp_path / "cluster-run" / "metrics").glob("*.db")), "the run's metrics directory"

        # 50 streams through nginx: five users with ten each (the most one user may hold).
        asker = _register(layout.entry, "asker")
        users = [_register(layout.entry, f"reader{i}") for i in range(STREAMS // 10)]
        clients += [asker, *users]
        qid = asker.post("/api/questions", json={"title": "Does Prometheus add up?", "body": "?"}).json()["id"]
        assert users[0].post(f"/api/questions/{qid}/follow").json()["following"] is True
        streams = []
        for client in users:
            for _ in range(10):
                stream = Stream(client)
                stream.start()
                streams.append(stream)
        for stream in streams:
            assert stream.opened.wait(10) and stream.status == 200, (stream.status, stream.error)
        prometheus.wait_for("sum(qa_notify_open_streams)", lambda v: v == STREAMS, f"{STREAMS} open streams")
        per_process = [float(r["value"][1]) for r in prometheus.query("qa_notify_open_streams")]
        assert len(per_process) == 2 and sum(per_process) == STREAMS, per_process
        if layout.nginx:
            assert min(per_process) > 0, f"nginx (least_conn) spreads the streams: {per_process}"

        # An answer to the question reader0 follows: timed into Redis, and onto reader0's ten streams.
        to_redis = "sum(qa_notify_outbox_to_redis_seconds_count) or vector(0)"
        to_streams = "sum(qa_notify_redis_to_stream_seconds_count) or vector(0)"
        before_redis, before_streams = prometheus.value(to_redis), prometheus.value(to_streams)
        answer = asker.post(f"/api/questions/{qid}/answers", json={"body": "Per machine, yes."})
        assert answer.status_code == 201, answer.text
        for stream in streams[:10]:
            assert stream.got_event.wait(10), f"no event on a follower's stream (error: {stream.error!r})"
        assert not any(s.got_event.is_set() for s in streams[10:]), "only the follower hears of it"
        prometheus.wait_for(to_redis, lambda v: v >= before_redis + 1, "the answer timed into Redis")
        prometheus.wait_for(to_streams, lambda v: v == before_streams + 10, "the answer timed onto ten streams")
        p99 = prometheus.value(
            "histogram_quantile(0.99, sum by (le) (increase(qa_notify_outbox_to_redis_seconds_bucket[1m])))"
        )
        assert p99 is not None and 0 < p99 <= 60, p99

        for expr in dashboard_queries():  # every panel of the shipped dashboard runs
            prometheus.query(expr)
        assert prometheus.value("max(qa_notify_outbox_undelivered)") == 0

        # Stop it all: run-cluster (Ctrl-C), then Prometheus.
        family.update(_family(proc.pid))
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(STOP_S) == 0, log_path.read_text(errors="replace")[-3000:]
        deadline = time.monotonic() + 5
        while (left := _alive(family, proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, "left running after Ctrl-C:\n" + "\n".join(left)
    finally:
        for client in clients:
            client.close()
        if prometheus is not None:
            prometheus.stop()
        if proc.poll() is None:
            family.update(_family(proc.pid))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for pid in family:  # the Valkey nodes are in sessions of their own
            with contextlib.suppress(ProcessLookupError):
                if _alive({pid: family[pid]}, -1):
                    os.kill(pid, signal.SIGKILL)
