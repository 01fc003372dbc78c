"""``make run-cluster`` end to end: start it, use it as a user would, Ctrl-C it.

``manage.py run-cluster`` runs as a child in its own process group, with a free port, its
own state directory (``--dir``), SQLite database, mail directory and RabbitMQ queue, so it
never meets another test or a developer's ``make run``. The test waits until the entry
point (nginx, or a web process when nginx is not installed) is ready and healthy, has two
users registered through the JSON API follow and answer a question, reads the answer off
the follower's SSE stream, then sends SIGINT and checks that run-cluster exits and every
process it started is gone (the Valkey nodes too, which have sessions of their own) and
none of its ports still listens. SIGINT goes once to the whole process group, as a
terminal's Ctrl-C does, and once to run-cluster alone, which must then stop the rest.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from devstack.embedded_redis import free_port
from devstack.local_cluster import RABBITMQ_URL, nginx_binary, rabbitmq_running

from ..live import REPO

pytestmark = pytest.mark.faults
PASSWORD = "correct-horse-9"
START_S = 90  # from start to ready and healthy
DELIVERY_S = 10  # from the answer's 201 to the follower's event
STOP_S = 30  # from SIGINT to run-cluster's exit
GRACE_S = 3  # from its exit to the last process it started gone


def _valkey_missing() -> str | None:
    from devstack.embedded_redis import _cli_binary, _server_binary

    try:
        _server_binary(), _cli_binary()
    except (ImportError, RuntimeError) as exc:
        return str(exc)
    return None


# -- processes, from /proc ---------------------------------------------------------------


def _processes() -> dict[int, tuple[int, int, str, str]]:
    """Every process: pid -> (parent pid, process group, start time, state)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rfind(")") + 2 :].split()
        found[int(entry)] = (int(fields[1]), int(fields[2]), fields[19], fields[0])
    return found


def _family(root: int) -> dict[int, str]:
    """``root`` and every process descended from it (the Valkey nodes have sessions of their
    own, so a process group alone would miss them): pid -> start time, to tell a reused pid."""
    procs = _processes()
    family, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in procs and pid not in family:
            family[pid] = procs[pid][2]
            todo += [child for child, (ppid, *_) in procs.items() if ppid == pid]
    return family


def _alive(family: dict[int, str], group: int) -> list[str]:
    """The processes of ``family`` (same pid, same start time) or of process group ``group``
    still running (a zombie has stopped: only its exit status is left for its parent)."""
    left = []
    for pid, (_, pgrp, started, state) in _processes().items():
        if state != "Z" and (family.get(pid) == started or pgrp == group):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            left.append(f"{pid} {cmd.strip()[:160]}")
    return left


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


# -- what run-cluster says ---------------------------------------------------------------


class Layout:
    """The topology as run-cluster's output states it."""

    def __init__(self, log: str) -> None:
        cluster = re.search(r"3 masters \+ 3 replicas: redis\+cluster://(\S+)/", log)
        self.cluster_ports = [int(a.rsplit(":", 1)[1]) for a in cluster.group(1).split(",")] if cluster else []
        broker = re.search(r"^broker: (.*)$", log, re.M)
        self.broker = broker.group(1) if broker else None
        self.rabbitmq = bool(self.broker and self.broker.startswith("RabbitMQ"))
        valkey_broker = re.search(r"a separate single Valkey on redis://127\.0\.0\.1:(\d+)/", log)
        self.broker_port = int(valkey_broker.group(1)) if valkey_broker else None
        nginx = re.search(r"nginx on (http://\S+) in front of web processes \[(\d+), (\d+)\]", log)
        alone = re.search(r"nginx is not installed, so the web processes answer on their own: (.*)$", log, re.M)
        self.nginx = bool(nginx)
        if nginx:
            self.entry = nginx.group(1)
            self.web_ports = [int(nginx.group(2)), int(nginx.group(3))]
        elif alone:
            self.web_ports = [int(u.rsplit(":", 1)[1]) for u in alone.group(1).split(", ")]
            self.entry = f"http://127.0.0.1:{self.web_ports[0]}"
        else:
            self.entry, self.web_ports = None, []
        self.started = "Ctrl-C stops everything" in log

    def ports(self) -> list[int]:
        ports = self.cluster_ports + self.web_ports + ([self.broker_port] if self.broker_port else [])
        return ports + ([int(self.entry.rsplit(":", 1)[1])] if self.nginx else [])


def _get_json(url: str) -> tuple[int, dict]:
    try:
        resp = httpx.get(url, timeout=3)
        return resp.status_code, resp.json()
    except (httpx.HTTPError, ValueError):
        return 0, {}


def _wait_until_up(proc: subprocess.Popen, log_path: Path, deadline: float) -> Layout:
    """Wait until run-cluster has said what it started and every web process (and nginx)
    answers ``/readyz`` 200 and ``/healthz`` with every dependency ok."""
    while True:
        log = log_path.read_text(errors="replace")
        assert proc.poll() is None, f"run-cluster exited with {proc.returncode}:\n{log[-3000:]}"
        assert time.monotonic() < deadline, f"run-cluster not up within {START_S}s:\n{log[-3000:]}"
        layout = Layout(log)
        if layout.started and layout.entry:
            bases = [layout.entry] + [f"http://127.0.0.1:{p}" for p in layout.web_ports]
            ready = [_get_json(f"{base}/readyz") for base in bases]
            health = [_get_json(f"{base}/healthz") for base in bases]
            if all(code == 200 for code, _ in ready + health):
                return layout
        time.sleep(0.5)


# -- a browser's stream ------------------------------------------------------------------


class Stream(threading.Thread):
    """``/notifications`` read in the background, as the browser's EventSource does."""

    def __init__(self, client: httpx.Client) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.events: list[tuple[float, str, dict]] = []
        self.opened = threading.Event()
        self.got_event = threading.Event()
        self.status: int | None = None
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            timeout = httpx.Timeout(5, read=60)
            with connect_sse(self.client, "GET", "/notifications", timeout=timeout) as source:
                self.status = source.response.status_code
                self.opened.set()  # answered: by now the web process has subscribed this stream
                for sse in source.iter_sse():
                    if sse.event == "message" and not sse.data:
                        continue  # the opening ``retry:`` hint
                    self.events.append((time.monotonic(), sse.event, json.loads(sse.data) if sse.data else {}))
                    self.got_event.set()
        except Exception as exc:  # noqa: BLE001  (reported by the test, not here)
            self.error = exc
        finally:
            self.opened.set()


def _register(base_url: str, username: str) -> httpx.Client:
    """A browser-like client that registers ``username`` through the JSON API (logged in)."""
    client = httpx.Client(base_url=base_url, timeout=10)
    token = client.get("/api/csrf").json()["csrf_token"]
    resp = client.post(
        "/api/register", json={"username": username, "password": PASSWORD}, headers={"X-CSRFToken": token}
    )
    assert resp.status_code == 201, resp.text
    client.headers["X-CSRFToken"] = client.get("/api/csrf").json()["csrf_token"]  # the session is new
    return client


# -- the test ----------------------------------------------------------------------------


def _interrupt_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: every process of the foreground group


def _interrupt_parent(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)  # ``kill -INT``: run-cluster alone must stop everything it started


@pytest.mark.timeout(START_S + DELIVERY_S + STOP_S + 60)  # the bounds below fail first, and clearer
@pytest.mark.parametrize("interrupt", [_interrupt_group, _interrupt_parent], ids=["ctrl-c", "sigint-to-run-cluster"])
def test_run_cluster_delivers_an_answer_live_and_ctrl_c_stops_all_of_it(tmp_path, interrupt):
    if missing := _valkey_missing():
        pytest.skip(f"run-cluster needs the embedded Valkey binary: {missing}")
    if not Path("/proc/self/stat").exists():
        pytest.skip("counts the run's processes from /proc (Linux)")
    expect_nginx, expect_rabbitmq = nginx_binary() is not None, rabbitmq_running()
    port = free_port()
    queue = f"qa-run-cluster-{os.getpid()}-{port}"
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CELERY_BROKER_URL", "PORT")},
        "DATABASE_URL": f"sqlite:///{tmp_path / 'qa_notify.sqlite'}",
        "MAIL_FILE_DIR": str(tmp_path / "mail"),
        "CELERY_TASK_QUEUE": queue,  # RabbitMQ outlives the run and may serve others
        "SECRET_KEY": "test-secret",
        "PYTHONUNBUFFERED": "1",
    }
    log_path = tmp_path / "run-cluster.log"
    started = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "manage.py"), "run-cluster", "--port", str(port),
             "--dir", str(tmp_path / "cluster-run"), "--no-seed"],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # a process group of its own, as a terminal gives a command
        )  # fmt: skip
    family: dict[int, str] = {}
    clients: list[httpx.Client] = []
    try:
        layout = _wait_until_up(proc, log_path, started + START_S)
        up_s = time.monotonic() - started
        family = _family(proc.pid)

        # It says what it used, and it used what this machine has.
        assert len(layout.cluster_ports) == 6
        assert layout.rabbitmq == expect_rabbitmq, layout.broker
        assert layout.rabbitmq or layout.broker_port, layout.broker
        assert layout.nginx == expect_nginx
        assert len(layout.web_ports) == 2
        if layout.nginx:
            assert layout.entry == f"http://127.0.0.1:{port}"
        _, health = _get_json(f"{layout.entry}/healthz")
        masters = [name for name in health["checks"] if name.startswith("redis ")]
        assert len(masters) == 3 and all(int(m.rsplit(":", 1)[1]) in layout.cluster_ports for m in masters), health
        assert health["status"] == "ok" and set(health["checks"]) == {"database", "broker", *masters}, health

        # Two users, as a browser would: one asks, the other follows and listens.
        asker, follower = _register(layout.entry, "asker"), _register(layout.entry, "follower")
        clients += [asker, follower]
        question = asker.post("/api/questions", json={"title": "Does run-cluster deliver?", "body": "?"})
        assert question.status_code == 201, question.text
        qid = question.json()["id"]
        follow = follower.post(f"/api/questions/{qid}/follow")
        assert follow.status_code == 200 and follow.json()["following"] is True, follow.text
        stream = Stream(follower)
        stream.start()
        assert stream.opened.wait(10) and stream.status == 200, (stream.status, stream.error)

        answer = asker.post(f"/api/questions/{qid}/answers", json={"body": "Yes:\nthrough the cluster"})
        assert answer.status_code == 201, answer.text
        posted = time.monotonic()
        assert stream.got_event.wait(DELIVERY_S), f"no event within {DELIVERY_S}s (error: {stream.error!r})"
        at, event, data = stream.events[0]
        assert event == "new_answers", stream.events
        assert data["question_id"] == qid and data["answer_id"] == answer.json()["id"]
        assert data["author"] == "asker" and data["excerpt"] == "Yes: through the cluster"
        assert data["question_title"] == "Does run-cluster deliver?"
        assert data["url"] == f"/questions/{qid}#answer-{answer.json()['id']}"
        assert data["notification_id"] > 0
        delivery_s = at - posted

        # Ctrl-C, with the follower's stream still open.
        family.update(_family(proc.pid))
        assert len(family) >= 1 + 6 + 2 + 2 + (1 if layout.nginx else 0), family
        interrupted = time.monotonic()
        interrupt(proc)
        try:
            code = proc.wait(STOP_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"run-cluster still running {STOP_S}s after SIGINT:\n" + "\n".join(_alive(family, proc.pid)))
        exited = time.monotonic()
        while (left := _alive(family, proc.pid)) and time.monotonic() < exited + GRACE_S:
            time.sleep(0.2)  # exited: any process it left behind shows here
        stop_s = time.monotonic() - interrupted
        assert not left, "left running after Ctrl-C:\n" + "\n".join(left)
        assert code == 0, log_path.read_text(errors="replace")[-3000:]
        assert not [p for p in layout.ports() if _listening(p)], "a port of the run still listens"
        stream.join(10)
        assert not stream.is_alive(), "the follower's stream outlived the run"
        print(
            f"run-cluster: up in {up_s:.1f}s (nginx {layout.nginx}, RabbitMQ {layout.rabbitmq}), answer to event"
            f" {delivery_s * 1000:.0f} ms, {len(family)} processes gone {stop_s:.1f}s after SIGINT"
        )
    finally:
        for client in clients:
            client.close()
        if proc.poll() is None:
            family.update(_family(proc.pid))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever a failed run left in its group
        proc.wait()
        for pid, started_at in family.items():  # the Valkey nodes are in sessions of their own
            if _processes().get(pid, (0, 0, None))[2] == started_at:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if expect_rabbitmq:
            from kombu import Connection

            with Connection(RABBITMQ_URL, connect_timeout=5) as conn:
                conn.default_channel.queue_delete(queue)
