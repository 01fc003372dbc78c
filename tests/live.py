"""Helpers for tests that talk to a real web process: start it, log in, read its SSE stream."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
from httpx_sse import connect_sse

REPO = Path(__file__).resolve().parent.parent
# Each web process keeps its metrics in a directory of its own (shared with the workers given
# its env), never in the checkout's instance/metrics that a developer's `make run` uses.
_METRICS = tempfile.TemporaryDirectory(prefix="qa-metrics-")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def broker_for(redis_url: str) -> str:
    """Celery's broker for a test: CELERY_BROKER_URL if set, else the test Redis.

    A Redis Cluster cannot be a broker; tests that run on one publish eagerly in-process,
    so their web processes get an in-memory broker unless RabbitMQ is named.
    """
    from qa_notify.events.connections import is_cluster

    return os.environ.get("CELERY_BROKER_URL") or ("memory://" if is_cluster(redis_url) else redis_url)


class WebProcess:
    """A production web process (``deploy/systemd/qa-notify-web@.service``'s command) in a
    subprocess, with the test's database and Redis."""

    def __init__(self, database_url: str, redis_url: str, **settings: str) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "CELERY_BROKER_URL": broker_for(redis_url),
            "SECRET_KEY": "test-secret",
            "WEB_DRAIN_SECONDS": "0",  # stop at once; the drain has tests of its own
            "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(dir=_METRICS.name),
            **{k: str(v) for k, v in settings.items()},
        }
        self.process: subprocess.Popen | None = None
        self.popen: dict = {}  # more for Popen, e.g. ``stderr`` to read the process's log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> WebProcess:
        from devstack.local_cluster import start_web

        for _ in range(3):
            self.process = start_web(self.port, self.env, **self.popen)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    if httpx.get(self.url + "/healthz", timeout=1).status_code in (200, 503):
                        return self
                except httpx.HTTPError:
                    time.sleep(0.1)
            if self.process.poll() is None:
                break  # running but not answering: no port clash, a real failure
            # It exited: most often its port was taken between free_port() and its bind (a
            # client connection of some process got it as its own port). Another port.
            self.port = free_port()
        raise RuntimeError("web process did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def metric(self, name: str) -> float:
        """Return ``name`` from ``/metrics``: the sum of its series (stream figures have one per process)."""
        lines = httpx.get(self.url + "/metrics").text.splitlines()
        values = [float(line.split()[-1]) for line in lines if line.startswith((name + " ", name + "{"))]
        if not values:
            raise KeyError(name)
        return sum(values)

    def client(self, username: str | None = None, password: str = "correct-horse-9") -> httpx.Client:
        """Return an httpx client, logged in as ``username`` if given."""
        client = httpx.Client(base_url=self.url, timeout=10)
        if username:
            token = client.get("/api/csrf").json()["csrf_token"]
            resp = client.post(
                "/api/login",
                json={"username": username, "password": password},
                headers={"X-CSRFToken": token},
            )
            assert resp.status_code == 200, resp.text
            client.headers["X-CSRFToken"] = client.get("/api/csrf").json()["csrf_token"]
        return client


def read_events(
    client: httpx.Client,
    count: int,
    timeout: float = 10.0,
    headers: dict | None = None,
    params: dict | None = None,
    opened: threading.Event | None = None,
):
    """Open the stream, return the first ``count`` events (heartbeat comments are skipped).

    ``opened`` is set once the server answered: by then it has subscribed this stream.
    """
    events = []
    with connect_sse(client, "GET", "/notifications", headers=headers or {}, params=params, timeout=timeout) as source:
        source.response.raise_for_status()
        if opened is not None:
            opened.set()
        for sse in source.iter_sse():
            if sse.event == "message" and not sse.data:
                continue  # the opening ``retry:`` hint, not an event
            events.append(sse)
            if len(events) >= count:
                break
    return events


def collect_events(
    client: httpx.Client, seconds: float, opened: threading.Event | None = None, on_event=None, until=None, **kwargs
):
    """Return every event the stream sends within ``seconds`` (heartbeats skipped); each is
    also handed to ``on_event``, if given, as it arrives. With ``until``, stop as soon as
    ``until(event)`` is true for one (it is kept)."""
    events = []
    with connect_sse(client, "GET", "/notifications", **kwargs) as source:
        source.response.raise_for_status()
        if opened is not None:
            opened.set()
        closer = threading.Timer(seconds, source.response.close)
        closer.start()
        try:
            for sse in source.iter_sse():
                if sse.event == "message" and not sse.data:
                    continue
                events.append(sse)
                if on_event is not None:
                    on_event(sse)
                if until is not None and until(sse):
                    break
        except (httpx.HTTPError, RuntimeError):
            pass  # closed by the timer
        finally:
            closer.cancel()
    return events
