"""Start the pieces a benchmark measures: an embedded Redis, a database, web and worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis

from qa_notify.embedded_redis import EmbeddedRedis, free_port

REPO = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-key-not-for-production"
FD_LIMIT = 20_000


class Stack:
    """One benchmark's Redis, database file and child processes; ``close()`` stops them all."""

    def __init__(self, workdir: Path, **settings: str) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.redis_server = EmbeddedRedis(workdir / "valkey", persist=False).start()
        self.redis_url = self.redis_server.url
        db_file = workdir / "bench.sqlite"
        db_file.unlink(missing_ok=True)
        self.database_url = f"sqlite:///{db_file}"
        self.env = {
            **os.environ,
            "REDIS_URL": self.redis_url,
            "DATABASE_URL": self.database_url,
            "SECRET_KEY": SECRET,
            "RATELIMIT_ENABLED": "0",
            **settings,
        }
        self.children: list[subprocess.Popen] = []
        subprocess.run(
            [sys.executable, str(REPO / "manage.py"), "init-db"],
            cwd=REPO,
            env=self.env,
            check=True,
            capture_output=True,
        )

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, decode_responses=True)

    def start_web(self) -> tuple[str, subprocess.Popen]:
        """Start ``manage.py web`` with the open-file limit raised; return its URL and process."""
        return self._serve("web", "{python} " + str(REPO / "manage.py") + " web --port {port}")

    def start_flask_sse(self) -> tuple[str, subprocess.Popen]:
        """Start the flask-sse comparison app under ``gunicorn -k gevent``; return its URL and master."""
        return self._serve(
            "flask-sse",
            "{python} -m gunicorn -k gevent -w 1 --worker-connections " + str(FD_LIMIT)
            + " --backlog 4096 -b 127.0.0.1:{port} bench.flask_sse_app:app",
        )  # fmt: skip

    def _serve(self, name: str, command: str) -> tuple[str, subprocess.Popen]:
        """Run ``command`` (with ``{python}`` and ``{port}`` filled in) under a raised open-file
        limit, its stderr in ``<workdir>/<name>.log``; wait until it answers /healthz."""
        port = free_port()
        cmd = f"ulimit -n {FD_LIMIT} && exec " + command.format(python=sys.executable, port=port)
        log = open(self.workdir / f"{name}.log", "w")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(["bash", "-c", cmd], cwd=REPO, env=self.env, stderr=log)
        self.children.append(proc)
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url)
        return url, proc

    def start_worker(self, concurrency: int = 2) -> subprocess.Popen:
        """Start one Celery worker with ``concurrency`` processes."""
        cmd = [sys.executable, str(REPO / "manage.py"), "worker", "-c", str(concurrency), "--loglevel", "warning"]
        proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.children.append(proc)
        time.sleep(3)
        return proc

    def app(self):
        """An app bound to this stack's database and Redis, for direct inserts and cookies."""
        os.environ.update({k: self.env[k] for k in ("REDIS_URL", "DATABASE_URL", "SECRET_KEY")})
        from qa_notify import create_app

        return create_app({"SECRET_KEY": SECRET, "REDIS_URL": self.redis_url})

    def close(self) -> None:
        for proc in self.children:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.children:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.redis_server.stop()


def port_of(url: str) -> int:
    """The port of a ``http://host:port`` URL."""
    return int(url.rsplit(":", 1)[1])


def _wait_healthy(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/healthz", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


def only_child(pid: int) -> int:
    """The pid of a process's single child (gunicorn's worker under its master)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(children[0])


def rss_kb(pid: int) -> int:
    """Resident memory of a process in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def redis_clients(r: redis.Redis) -> int:
    """Connections the Redis server has open right now, minus the one asking."""
    return int(r.info("clients")["connected_clients"]) - 1
