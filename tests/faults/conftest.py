"""Fault-injection harness: real Redis, web and worker processes we can kill, and clients
that reconnect like a browser."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from devstack.embedded_redis import EmbeddedCluster, EmbeddedRedis, free_port
from devstack.local_cluster import RABBITMQ_URL, rabbitmq_running
from qa_notify import create_app
from qa_notify.events.audiences import Users
from qa_notify.events.outbox import emit
from qa_notify.events.types import CustomEvent
from qa_notify.extensions import db
from qa_notify.models import User

from ..live import REPO, WebProcess

PASSWORD = "fault-pass-123"
RESULTS = Path(__file__).resolve().parent / "results"


@pytest.fixture(autouse=True)
def _own_servers_only():
    if os.environ.get("REDIS_URL") or os.environ.get("DATABASE_URL"):
        pytest.skip("fault tests kill and restart their own Redis; they run on the embedded stack only")


class FaultStack:
    """A Redis we can kill, a SQLite database, the app in-process, and child processes."""

    def __init__(
        self,
        tmp: Path,
        persist: bool = True,
        separate_broker: bool = False,
        cluster: bool = False,
        rabbitmq: bool = False,
    ) -> None:
        self.tmp = tmp
        self.persist = persist
        self.port = free_port()
        if cluster:  # 3 masters + 3 replicas; a broker of its own, since a cluster cannot be one
            self.cluster = EmbeddedCluster(tmp / "cluster", node_timeout_ms=1000, persist=persist).start()
            self.redis_url = self.cluster.url
            separate_broker = True
        else:
            self.redis = EmbeddedRedis(tmp / "valkey", port=self.port, persist=persist).start()
            self.redis_url = self.redis.url
        # A broker of its own (no persistence), so a test can take the broker away alone.
        self.broker_port = free_port()
        self.broker = (
            EmbeddedRedis(tmp / "broker", port=self.broker_port, persist=False).start()
            if separate_broker and not rabbitmq
            else None
        )
        self.broker_url = RABBITMQ_URL if rabbitmq else self.broker.url if self.broker else self.redis_url
        # A queue of this test's own: RabbitMQ outlives the test, and may serve other runs.
        self.queue = f"qa-faults-{os.getpid()}-{free_port()}"
        self.database_url = f"sqlite:///{tmp / 'faults.sqlite'}"
        self.web: WebProcess | None = None
        self.workers: list[subprocess.Popen] = []
        self.env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "CELERY_BROKER_URL": self.broker_url,
            "CELERY_TASK_QUEUE": self.queue,
            "SECRET_KEY": "test-secret",
            "OUTBOX_RELAY_SECONDS": "1",
            "OUTBOX_RELAY_AGE_SECONDS": "1",
            "FANOUT_STALL_SECONDS": "5",
            "CELERY_VISIBILITY_TIMEOUT": "5",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),  # the stack's processes are one machine
            # As docs/deployment.md advises for a cluster with replicas.
            **({"REDIS_WAIT_REPLICAS": "1"} if cluster else {}),
        }
        subprocess.run(
            [sys.executable, str(REPO / "manage.py"), "init-db"],
            cwd=REPO,
            env=self.env,
            check=True,
            capture_output=True,
        )
        self.app = create_app(
            {
                "SECRET_KEY": "test-secret",
                "REDIS_URL": self.redis_url,
                "CELERY_BROKER_URL": self.broker_url,
                "CELERY_TASK_QUEUE": self.queue,
                "SQLALCHEMY_DATABASE_URI": self.database_url,
                "CELERY_ALWAYS_EAGER": True,
                "OUTBOX_RELAY_AGE_SECONDS": 0,
            }
        )

    # -- processes --------------------------------------------------------------------------

    def start_web(self, **settings: str) -> WebProcess:
        self.web = WebProcess(self.database_url, self.redis_url, **{"SSE_HEARTBEAT_SECONDS": "1", **settings})
        self.web.env.update({k: v for k, v in self.env.items() if k not in os.environ})
        return self.web.start()

    def start_worker(self, beat: bool = False, concurrency: int = 2) -> subprocess.Popen:
        cmd = [sys.executable, str(REPO / "manage.py"), "worker", "-c", str(concurrency), "--loglevel", "warning"]
        if beat:
            cmd.insert(3, "--beat")
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        self.workers.append(proc)
        return proc

    def kill_redis(self) -> None:
        self.redis.kill()

    def restart_redis(self) -> None:
        self.redis = EmbeddedRedis(self.tmp / "valkey", port=self.port, persist=self.persist).start()

    def kill_broker(self) -> None:
        self.broker.kill()

    def restart_broker(self) -> None:
        self.broker = EmbeddedRedis(self.tmp / "broker", port=self.broker_port, persist=False).start()

    def close(self) -> None:
        if self.web:
            self.web.kill()
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait()
        if self.broker_url == RABBITMQ_URL:
            with self.app.extensions["celery"].connection_for_write() as conn:
                conn.default_channel.queue_delete(self.queue)
        if hasattr(self, "cluster"):
            self.cluster.stop()
        else:
            self.redis.stop()
        if self.broker:
            self.broker.stop()

    # -- data -------------------------------------------------------------------------------

    def users(self, n: int) -> list[int]:
        with self.app.app_context():
            probe = User(username="probe-hash")
            probe.set_password(PASSWORD)
            users = [User(username=f"user{i}", password_hash=probe.password_hash) for i in range(n)]
            db.session.add_all(users)
            db.session.commit()
            return [u.id for u in users]

    def followers(self, n: int) -> list[int]:
        """Insert ``n`` bare users (no usable password) at once; return every user id."""
        from sqlalchemy import insert, select

        with self.app.app_context():
            rows = [{"username": f"f{i}", "password_hash": "x", "role": "user"} for i in range(n)]
            db.session.execute(insert(User), rows)
            db.session.commit()
            return list(db.session.scalars(select(User.id)))

    def wait_for_first_inbox_row(self, timeout: float = 30) -> None:
        """Return once a fan-out has written its first inbox row."""
        from sqlalchemy import func, select

        from qa_notify.models import Notification

        started = time.monotonic()
        with self.app.app_context():
            while not db.session.scalar(select(func.count()).select_from(Notification)):
                assert time.monotonic() - started < timeout, "the fan-out never started"
                time.sleep(0.01)
                db.session.expire_all()

    def publish(self, user_ids: list[int], n: int, pad: int = 0) -> None:
        """Emit event ``n`` (type ``tick``, ``pad`` bytes of filler) to the users, through the outbox."""
        data = {"n": n, "pad": "x" * pad} if pad else {"n": n}
        with self.app.app_context():
            emit(CustomEvent(name="tick", data=data), Users(user_ids))
            db.session.commit()

    def relay(self) -> None:
        """Run the outbox relay once (what the beat schedule does every second)."""
        with self.app.app_context(), contextlib.suppress(Exception):  # Redis still away: next time
            self.app.extensions["celery"].tasks["workers.relay_outbox"].apply()

    def inbox_ticks(self, user_id: int, event: str = "tick", key=lambda data: data["n"]) -> list[int]:
        """The numbers of the ``event`` notifications in a user's inbox, oldest first."""
        from sqlalchemy import select

        from qa_notify.models import Notification

        with self.app.app_context():
            rows = db.session.scalars(
                select(Notification).where(Notification.user_id == user_id).order_by(Notification.id)
            )
            return [key(r.payload) for r in rows if r.event_type == event]


def login(base_url: str, username: str) -> httpx.Client:
    """An httpx client logged in as ``username`` (whose password is PASSWORD)."""
    client = httpx.Client(base_url=base_url, timeout=5)
    token = client.get("/api/csrf").json()["csrf_token"]
    resp = client.post("/api/login", json={"username": username, "password": PASSWORD}, headers={"X-CSRFToken": token})
    resp.raise_for_status()
    return client


class ReconnectingClient:
    """An SSE reader that reconnects with Last-Event-ID, as a browser's EventSource does."""

    def __init__(
        self, base_url: str, username: str, expect: int, event: str = "tick", key=lambda data: data["n"]
    ) -> None:
        self.base_url = base_url
        self.username = username
        self.expect = expect
        self.event = event
        self.key = key
        self.ticks: list[int] = []
        self.resyncs = 0
        self.reconnects = 0
        self.last_id: str | None = None
        self.stop = threading.Event()
        self.opened = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ReconnectingClient:
        self.thread.start()
        return self

    def _run(self) -> None:
        client = None
        while not self.stop.is_set() and len(set(self.ticks)) < self.expect:
            try:
                client = client or login(self.base_url, self.username)
                headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
                with connect_sse(client, "GET", "/notifications", headers=headers, timeout=5) as source:
                    if source.response.status_code != 200:
                        raise httpx.HTTPError(f"status {source.response.status_code}")
                    self.opened.set()
                    for sse in source.iter_sse():
                        if sse.id:
                            self.last_id = sse.id
                        if sse.event == self.event:
                            self.ticks.append(self.key(json.loads(sse.data)))
                        elif sse.event == "resync":
                            self.resyncs += 1
                        if self.stop.is_set() or len(set(self.ticks)) >= self.expect:
                            return
            except (httpx.HTTPError, OSError, ValueError):
                pass
            self.reconnects += 1
            time.sleep(0.3)

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        self.stop.set()
        self.thread.join(5)


def record(name: str, **figures) -> None:
    """Keep a scenario's figures for docs/reliability.md."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=1) + "\n")


@pytest.fixture
def fault_stack(tmp_path):
    stack = FaultStack(tmp_path)
    yield stack
    stack.close()


@pytest.fixture
def broker_stack(tmp_path):
    stack = FaultStack(tmp_path, separate_broker=True)
    yield stack
    stack.close()


@pytest.fixture
def cluster_stack(tmp_path):
    stack = FaultStack(tmp_path, cluster=True)
    yield stack
    stack.close()


@pytest.fixture
def rabbitmq_cluster_stack(tmp_path):
    if not rabbitmq_running():
        pytest.skip("no RabbitMQ on 127.0.0.1:5672 (CI machines run one; install rabbitmq-server to run this)")
    stack = FaultStack(tmp_path, cluster=True, rabbitmq=True)
    yield stack
    stack.close()


@pytest.fixture
def volatile_stack(tmp_path):
    stack = FaultStack(tmp_path, persist=False)
    yield stack
    stack.close()
