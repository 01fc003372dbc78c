"""What ``manage.py run`` and ``run-cluster`` start on one machine, and how they stop it all."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from config import INSTANCE_DIR

from .embedded_redis import EmbeddedCluster, EmbeddedRedis, free_port
from .local_cluster import nginx_binary, start_broker, start_nginx, start_web

HERE = Path(__file__).resolve().parent.parent  # the repository: manage.py and deploy/
MANAGE = [sys.executable, str(HERE / "manage.py")]


def run_laptop(host: str, port: int, seed: bool) -> None:
    """Start Redis (embedded unless REDIS_URL), migrations, a worker with beat and the web server."""
    from qa_notify.metrics import machine

    INSTANCE_DIR.mkdir(exist_ok=True)
    ensure_vapid_key()
    machine.join(INSTANCE_DIR / "metrics", fresh=True)  # for the children; an earlier run's figures go
    url_file = INSTANCE_DIR / "redis.url"
    embedded = None
    if not os.environ.get("REDIS_URL"):
        embedded = EmbeddedRedis(INSTANCE_DIR / "valkey").start()
        url_file.write_text(embedded.url)  # the app finds it there (create_app, when REDIS_URL is unset)
        os.environ["REDIS_URL"] = embedded.url
        click.echo(f"embedded Redis-compatible server on {embedded.url}", err=True)
    children: list[subprocess.Popen] = []
    try:
        prepare_database(seed)
        children.append(subprocess.Popen([*MANAGE, "worker", "--beat", "--loglevel", "warning"], cwd=HERE))
        children.append(subprocess.Popen([*MANAGE, "web", "--host", host, "--port", str(port)], cwd=HERE))
        click.echo(f"qa_notify is starting on http://{host}:{port} (Ctrl-C stops everything)", err=True)
        supervise(children)
    finally:
        stop_all(children)
        if embedded is not None:
            embedded.stop()
            url_file.unlink(missing_ok=True)


def ensure_vapid_key() -> None:
    """Create the Web Push (VAPID) private key under instance/ once, unless VAPID_PRIVATE_KEY is set."""
    from config import Config
    from qa_notify.push.vapid import ensure_key_file

    if not os.environ.get("VAPID_PRIVATE_KEY") and ensure_key_file(Path(Config.VAPID_KEY_FILE)):
        click.echo(f"made a VAPID key pair for Web Push: {Config.VAPID_KEY_FILE}", err=True)


def run_cluster(host: str, port: int, seed: bool, state_dir: Path) -> None:
    """The scaled-out topology: a Valkey cluster, a broker, 2 web behind nginx, 2 workers."""
    from qa_notify.metrics import machine

    here = state_dir.resolve()
    for old in ("valkey", "broker", "nginx"):  # ports change every run: a fresh cluster each time
        shutil.rmtree(here / old, ignore_errors=True)
    here.mkdir(parents=True, exist_ok=True)
    machine.join(here / "metrics", fresh=True)  # every process of the run: web, workers, their children
    cluster = EmbeddedCluster(here / "valkey").start()
    broker_url, broker, broker_line = start_broker(here)
    behind_nginx = nginx_binary() is not None
    os.environ.update(REDIS_URL=cluster.url, CELERY_BROKER_URL=broker_url, PROXY_COUNT="1" if behind_nginx else "0")
    click.echo(f"Valkey cluster, 3 masters + 3 replicas: {cluster.url}", err=True)
    click.echo(broker_line, err=True)
    children: list[subprocess.Popen] = []
    try:
        prepare_database(seed)
        schedule = ["--schedule", str(here / "celerybeat-schedule")]  # its own, not `make run`'s
        for beat in (["--beat", *schedule], ["--no-beat"]):
            children.append(subprocess.Popen([*MANAGE, "worker", *beat, "--loglevel", "warning"], cwd=HERE))
        children += _start_web_tier(host, port, here, behind_nginx)
        click.echo("two workers (one with beat); Ctrl-C stops everything", err=True)
        supervise(children)
    finally:
        stop_all(children)
        if broker is not None:
            broker.stop()
        cluster.stop()


def _start_web_tier(host: str, port: int, here: Path, behind_nginx: bool) -> list[subprocess.Popen]:
    """Start two web processes as production runs them, behind nginx on ``port`` if it is installed."""
    web_ports = [free_port(), free_port()]
    started = [start_web(web_port) for web_port in web_ports]  # deploy/systemd's command
    if behind_nginx:
        started.append(start_nginx(port, web_ports, here / "nginx"))
        click.echo(f"qa_notify: nginx on http://{host}:{port} in front of web processes {web_ports}", err=True)
    else:
        urls = ", ".join(f"http://127.0.0.1:{p}" for p in web_ports)
        click.echo(f"qa_notify: nginx is not installed, so the web processes answer on their own: {urls}", err=True)
    return started


def prepare_database(seed: bool) -> None:
    """Apply the migrations; add the demo data to an empty database when ``seed``."""
    from flask_migrate import upgrade
    from sqlalchemy import func, select

    from qa_notify import create_app
    from qa_notify.extensions import db
    from qa_notify.models import User

    app = create_app()
    with app.app_context():
        upgrade()
        if seed and not db.session.scalar(select(func.count()).select_from(User)):
            app.test_cli_runner().invoke(args=["seed-demo"], catch_exceptions=False)
            click.echo("demo data added; log in as alice / demo-pass-123 (admin)", err=True)


def supervise(children: list[subprocess.Popen]) -> None:
    """Wait until a signal arrives or a child exits."""
    stopping = {"now": False}

    def on_signal(signum, _frame):
        stopping["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stopping["now"]:
        for child in children:
            if child.poll() is not None:
                click.echo(f"a child process exited with {child.returncode}; stopping", err=True)
                return
        time.sleep(0.2)


def stop_all(children: list[subprocess.Popen]) -> None:
    """SIGTERM every child still running; kill those that have not ended within 10 s."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
