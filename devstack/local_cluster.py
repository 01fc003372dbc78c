"""The scaled-out topology on one machine, for someone evaluating it: ``make run-cluster``.

A 3-master + 3-replica Valkey cluster from the embedded binary, RabbitMQ as Celery's
broker when one answers on 127.0.0.1:5672 (else a separate single Valkey, said so), two
web processes behind nginx when nginx is installed (else on their own ports, said so), and
two workers, one of them with beat. ``manage.py run-cluster`` drives it.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from .embedded_redis import EmbeddedRedis

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
ROOT = Path(__file__).resolve().parent.parent
UNIT_DIR = ROOT / "deploy" / "systemd"
WEB_UNIT = "qa-notify-web@.service"


def unit_command(unit: str, instance: str) -> tuple[list[str], dict[str, str]]:
    """Return the ``ExecStart`` command and ``Environment=`` settings of ``deploy/systemd/<unit>``
    for ``instance`` (``%i``), as this checkout runs them.

    The unit names its program in the deployment's venv (``/srv/qa_notify/.venv/bin/python``);
    here it is the program of that name beside this interpreter, run from the repository.
    So run-cluster, the tests and the benchmarks start exactly what production runs.
    """
    lines = (UNIT_DIR / unit).read_text().splitlines()
    [exec_start] = [line.removeprefix("ExecStart=") for line in lines if line.startswith("ExecStart=")]
    argv = [arg.replace("%i", instance) for arg in shlex.split(exec_start)]
    argv[0] = str(Path(sys.executable).with_name(Path(argv[0]).name))
    env = {}
    for line in lines:
        if line.startswith("Environment="):
            key, _, value = line.removeprefix("Environment=").replace("%i", instance).partition("=")
            env[key] = value
    return argv, env


def start_web(port: int, env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    """Start one production web process (``qa-notify-web@<port>``'s command) from the repository."""
    argv, unit_env = unit_command(WEB_UNIT, str(port))
    return subprocess.Popen(argv, cwd=ROOT, env={**(env if env is not None else os.environ), **unit_env}, **popen)


def rabbitmq_running() -> bool:
    """True when something answers on RabbitMQ's port on this machine."""
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
        return True
    except OSError:
        return False


def start_broker(instance: Path) -> tuple[str, EmbeddedRedis | None, str]:
    """Return Celery's broker URL, the server started for it (if any), and a line saying which."""
    if rabbitmq_running():
        return RABBITMQ_URL, None, "broker: RabbitMQ on 127.0.0.1:5672"
    server = EmbeddedRedis(instance / "broker", persist=True).start()
    return server.url, server, f"broker: no RabbitMQ here, a separate single Valkey on {server.url}"


def nginx_config(port: int, upstream_ports: list[int], prefix: Path, workers: int = 2) -> str:
    """Return a complete nginx.conf balancing ``upstream_ports`` on 127.0.0.1:``port``.

    The same settings as ``deploy/nginx.conf``, made self-contained (own pid, logs and
    temp files under ``prefix``) so it runs as this user, in the foreground. Each nginx
    worker holds at most 8,000 streams (two descriptors each, under a 20,000 open-file
    limit): ``workers`` sets how many streams nginx can carry; ``reuseport`` has the kernel
    spread new connections evenly over them.
    """
    # max_fails=0: see deploy/nginx.conf (a process busy with a reconnect storm is not dead).
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=0;" for p in upstream_ports)
    user = pwd.getpwuid(os.getuid()).pw_name  # workers as this user, so they can use prefix/
    return f"""daemon off;
user {user};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_processes {workers};
worker_rlimit_nofile 20000;  # each proxied stream holds two descriptors: the browser's and the upstream's
events {{ worker_connections 16000; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream qa_notify_web {{
        least_conn;
{servers}
        keepalive 64;
        keepalive_timeout 5s;
    }}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        client_header_timeout 10s;
        client_body_timeout 10s;
        client_max_body_size 256k;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Request-ID $request_id;
        location /notifications {{
            proxy_pass http://qa_notify_web;
            proxy_buffering off;
            proxy_cache off;
            proxy_read_timeout 1h;
            proxy_next_upstream error timeout http_503;
        }}
        location / {{
            proxy_pass http://qa_notify_web;
            proxy_read_timeout 60s;
        }}
    }}
}}
"""


def nginx_binary() -> str | None:
    """Return the nginx executable, if nginx is installed (also in /usr/sbin, off most PATHs)."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def start_nginx(port: int, upstream_ports: list[int], prefix: Path, workers: int = 2) -> subprocess.Popen:
    """Start nginx in the foreground with ``nginx_config``; the caller stops it."""
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config(port, upstream_ports, prefix, workers))
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed")
    return subprocess.Popen([binary, "-c", str(conf), "-p", str(prefix)], stderr=subprocess.DEVNULL)
