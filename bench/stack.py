"""Start the pieces a benchmark measures: an embedded Redis, a database, web and worker processes."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis

from devstack.embedded_redis import EmbeddedCluster, EmbeddedRedis, free_port
from devstack.local_cluster import WEB_UNIT, start_broker, start_nginx, unit_command
from qa_notify.events.connections import is_cluster_client, make_client

REPO = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-key-not-for-production"
FD_LIMIT = 20_000
APP_SETTINGS = ("REDIS_URL", "DATABASE_URL", "SECRET_KEY", "CELERY_BROKER_URL", "CELERY_TASK_QUEUE")


class Stack:
    """One benchmark's Redis, database file and child processes; ``close()`` stops them all."""

    def __init__(self, workdir: Path, cluster: bool = False, **settings: str) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.servers: list = []  # what close() stops after the children
        if cluster:  # 3 masters + 3 replicas, and a broker (RabbitMQ if this machine runs one)
            self.cluster = EmbeddedCluster(workdir / "cluster", persist=False).start()
            broker_url, broker, _ = start_broker(workdir)
            self.servers += [self.cluster, *([broker] if broker else [])]
            self.redis_url = self.cluster.url
            settings = {"CELERY_BROKER_URL": broker_url, "CELERY_TASK_QUEUE": f"qa-bench-{os.getpid()}", **settings}
        else:
            self.redis_server = EmbeddedRedis(workdir / "valkey", persist=False).start()
            self.servers.append(self.redis_server)
            self.redis_url = self.redis_server.url
            # Explicit, so nothing an earlier cluster scenario left in the environment applies.
            settings = {"CELERY_BROKER_URL": self.redis_url, "CELERY_TASK_QUEUE": "celery", **settings}
        external = os.environ.get("BENCH_DATABASE_URL")
        if external:  # e.g. PostgreSQL: a database for the benchmarks alone, emptied here
            self.database_url = external
            _empty_database(external)
        else:
            db_file = workdir / "bench.sqlite"
            db_file.unlink(missing_ok=True)
            self.database_url = f"sqlite:///{db_file}"
        self.env = {
            **os.environ,
            "REDIS_URL": self.redis_url,
            "DATABASE_URL": self.database_url,
            "SECRET_KEY": SECRET,
            "RATELIMIT_ENABLED": "0",
            # This run's processes are one machine: their metrics add up here, and nowhere else.
            "PROMETHEUS_MULTIPROC_DIR": str(_fresh_dir(workdir / "metrics")),
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
        return make_client(self.redis_url)

    def start_webs(self, count: int, nginx_workers: int = 2) -> str:
        """Start ``count`` web processes; with more than one, nginx in front. Return the URL to use."""
        started = [self.start_web() for _ in range(count)]
        self.webs = [proc for _, proc in started]
        self.web_ports = [port_of(url) for url, _ in started]
        urls = [url for url, _ in started]
        if count == 1:
            return urls[0]
        port = free_port()
        self.nginx = start_nginx(port, [port_of(u) for u in urls], self.workdir / "nginx", nginx_workers)
        self.children.append(self.nginx)
        _wait_healthy(f"http://127.0.0.1:{port}")
        return f"http://127.0.0.1:{port}"

    def start_web(self) -> tuple[str, subprocess.Popen]:
        """Start a web process with the command production runs (``deploy/systemd``'s web unit),
        the open-file limit raised; return its URL and process."""
        argv, unit_env = unit_command(WEB_UNIT, "{port}")
        self.env.update(unit_env)
        return self._serve("web", shlex.join(argv).replace("'{port}'", "{port}"))

    def start_flask_sse(self) -> tuple[str, subprocess.Popen]:
        """Start the flask-sse comparison app under ``gunicorn -k gevent``; return its URL and master."""
        return self._serve(
            "flask-sse",
            "{python} -m gunicorn -k gevent -w 1 --worker-connections " + str(FD_LIMIT)
            + " --backlog 4096 -b 127.0.0.1:{port} bench.flask_sse_app:app",
        )  # fmt: skip

    def _serve(self, name: str, command: str) -> tuple[str, subprocess.Popen]:
        """Run ``command`` (with ``{python}`` and ``{port}`` filled in) under a raised open-file
        limit, its stderr in ``<workdir>/<name>-<port>.log``; wait until it answers /healthz."""
        port = free_port()
        cmd = f"ulimit -n {FD_LIMIT} && exec " + command.format(python=sys.executable, port=port)
        log = open(self.workdir / f"{name}-{port}.log", "w")  # noqa: SIM115 - the child owns it
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
        os.environ.update({k: v for k, v in self.env.items() if k in APP_SETTINGS})
        from qa_notify import create_app

        return create_app({"SECRET_KEY": SECRET, "REDIS_URL": self.redis_url})

    def _delete_bench_queue(self) -> None:
        """A queue made for this run on a shared RabbitMQ goes when the run does."""
        queue = self.env["CELERY_TASK_QUEUE"]
        if queue.startswith("qa-bench-") and self.env["CELERY_BROKER_URL"].startswith("amqp"):
            from kombu import Connection

            with Connection(self.env["CELERY_BROKER_URL"]) as conn:
                conn.default_channel.queue_delete(queue)

    def close(self) -> None:
        for proc in self.children:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.children:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._delete_bench_queue()
        for server in self.servers:
            server.stop()


def _fresh_dir(path: Path) -> Path:
    """``path``, created empty."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


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
    """Connections the Redis server (every master of a cluster) has open, minus those asking."""
    if is_cluster_client(r):
        nodes = [node.redis_connection for node in r.get_primaries()]
        return sum(int(n.info("clients")["connected_clients"]) - 1 for n in nodes)
    return int(r.info("clients")["connected_clients"]) - 1


def _empty_database(url: str) -> None:
    """Drop everything in ``url``'s database (PostgreSQL: its public schema) before a run."""
    from sqlalchemy import create_engine, text

    from config import database_url

    engine = create_engine(database_url(url))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        else:
            raise SystemExit("BENCH_DATABASE_URL: only PostgreSQL is supported (SQLite is the default)")
    engine.dispose()
