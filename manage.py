"""qa_notify's command line: ``python manage.py run`` starts everything on a laptop.

``run``     embedded Redis (unless REDIS_URL), migrations, demo data, a Celery worker and
            the gevent web server; Ctrl-C or SIGTERM stops them all.
``web``     the gevent web server: what ``run`` starts, and what production runs (one per port).
``worker``  a Celery worker (add ``--beat`` on exactly one of them).
``run-cluster``  the scaled-out topology on one machine: Valkey cluster, broker, nginx, 2+2.
Plus the app's commands: init-db, create-user, seed-demo, notify, broadcast.
"""

import sys

if len(sys.argv) > 1 and sys.argv[1] == "web":
    # Must happen before anything imports socket or threading.
    from gevent import monkey

    monkey.patch_all()

import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import click  # noqa: E402
from flask.cli import FlaskGroup  # noqa: E402

from config import INSTANCE_DIR, config_for  # noqa: E402
from qa_notify import create_app  # noqa: E402
from qa_notify.logs import configure_logging  # noqa: E402

HERE = Path(__file__).resolve().parent
log = logging.getLogger("qa_notify.manage")


def listen_options(command):
    """Add ``--host`` and ``--port`` (default: the PORT variable, else 5000)."""
    command = click.option(
        "--port", type=int, default=lambda: int(os.environ.get("PORT", 5000)), show_default="PORT or 5000"
    )(command)
    return click.option("--host", default="127.0.0.1", show_default=True)(command)


@click.group(cls=FlaskGroup, create_app=create_app, add_default_commands=False)
def cli() -> None:
    """Manage qa_notify."""
    try:
        configure_logging()  # the same LOG_LEVEL and LOG_FORMAT in every process
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None  # one line, exit status 1


@cli.command("web", context_settings={"ignore_unknown_options": True}, with_appcontext=False)
@listen_options
def web(host: str, port: int) -> None:
    """Serve the site with gevent's WSGI server (thousands of open streams per process)."""
    from qa_notify.metrics import machine

    machine.join(INSTANCE_DIR / "metrics")  # before the app: prometheus_client reads it at import
    from qa_notify.limits import raise_open_file_limit
    from qa_notify.live.hub import close_all_streams
    from qa_notify.metrics.instruments import stream_gauges
    from qa_notify.webserver import make_server

    raise_open_file_limit()
    app = create_app()
    stream_gauges()  # this process serves streams: it reports their count from now on, from zero
    server = make_server(app, host, port)

    def stop(drain_seconds: float) -> None:
        # Streams end now with a reconnect hint and /readyz turns 503; the port stays open
        # for the drain so a load balancer sees the 503 and in-flight requests finish.
        close_all_streams(app)
        gevent.spawn_later(drain_seconds, server.stop, timeout=5)

    import gevent

    gevent.signal_handler(signal.SIGTERM, stop, app.config["WEB_DRAIN_SECONDS"])
    gevent.signal_handler(signal.SIGINT, stop, 0)
    log.info("qa_notify web listening on http://%s:%s", host, port)
    server.serve_forever()


@cli.command("worker", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--beat/--no-beat", default=False, help="also run the periodic outbox relay and ingest poller")
@click.option("--concurrency", "-c", type=int, default=2, show_default=True)
@click.option("--loglevel", "-l", default=None, show_default="LOG_LEVEL")
@click.pass_context
def worker(ctx: click.Context, beat: bool, concurrency: int, loglevel: str | None) -> None:
    """Run a Celery worker for the fan-out tasks."""
    from qa_notify.metrics import machine

    machine.join(INSTANCE_DIR / "metrics")  # the worker and its children, like the web processes
    settings = config_for()
    # With JSON logs, no banner on stdout (--quiet): every line the worker writes is JSON.
    quiet = ["--quiet"] if settings.LOG_FORMAT == "json" else []
    args = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.celery_app",
        *quiet,
        "worker",
        "-l",
        loglevel or settings.LOG_LEVEL,
        "-c",
        str(concurrency),
    ]
    if beat:
        args.append("--beat")
        given = ("-s", "--schedule", "--schedule-filename")
        if not any(a in given or a.startswith(tuple(f"{g}=" for g in given[1:])) for a in ctx.args):
            args += ["--schedule", str(INSTANCE_DIR / "celerybeat-schedule")]  # unless run-cluster gave its own
    if not any(a in ("-n", "--hostname") or a.startswith("--hostname=") for a in ctx.args):
        # A name of its own: two workers on one host must not share one (RabbitMQ refuses the
        # second one's control queue).
        args += ["-n", f"qa_notify-{os.getpid()}@%h"]
    os.execvp(args[0], args + list(ctx.args))


@cli.command("run")
@listen_options
@click.option("--seed/--no-seed", default=True, help="add demo data when the database is empty")
def run(host: str, port: int, seed: bool) -> None:
    """Start everything: Redis (embedded unless REDIS_URL), migrations, worker, web server."""
    from qa_notify.embedded_redis import EmbeddedRedis
    from qa_notify.metrics import machine

    INSTANCE_DIR.mkdir(exist_ok=True)
    machine.join(INSTANCE_DIR / "metrics", fresh=True)  # for the children; an earlier run's figures go
    url_file = INSTANCE_DIR / "redis.url"
    embedded = None
    if not os.environ.get("REDIS_URL"):
        embedded = EmbeddedRedis(INSTANCE_DIR / "valkey").start()
        url_file.write_text(embedded.url)
        os.environ["REDIS_URL"] = embedded.url
        click.echo(f"embedded Redis-compatible server on {embedded.url}", err=True)
    children: list[subprocess.Popen] = []
    try:
        _prepare_database(seed)
        worker_cmd = [
            sys.executable,
            str(HERE / "manage.py"),
            "worker",
            "--beat",
            "--loglevel",
            "warning",
        ]
        children.append(subprocess.Popen(worker_cmd, cwd=HERE))
        children.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(HERE / "manage.py"),
                    "web",
                    "--host",
                    host,
                    "--port",
                    str(port),
                ],
                cwd=HERE,
            )
        )
        click.echo(f"qa_notify is starting on http://{host}:{port} (Ctrl-C stops everything)", err=True)
        _supervise(children)
    finally:
        _stop_all(children)
        if embedded is not None:
            embedded.stop()
            url_file.unlink(missing_ok=True)


@cli.command("run-cluster")
@listen_options
@click.option("--seed/--no-seed", default=True, help="add demo data when the database is empty")
@click.option(
    "--dir",
    "state_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=INSTANCE_DIR / "cluster-run",
    show_default="instance/cluster-run",
    help="where the Valkey nodes, the broker, nginx, beat and the metrics keep their files (its valkey/, broker/,"
    " nginx/ and metrics/ are wiped at start); with --port and DATABASE_URL, a second run beside another",
)
def run_cluster(host: str, port: int, seed: bool, state_dir: Path) -> None:
    """The scaled-out topology on this machine: a Valkey cluster, a broker, 2 web, 2 workers."""
    import shutil

    from qa_notify.embedded_redis import EmbeddedCluster, free_port
    from qa_notify.local_cluster import nginx_binary, start_broker, start_nginx, start_web
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
        _prepare_database(seed)
        manage = [sys.executable, str(HERE / "manage.py")]
        schedule = ["--schedule", str(here / "celerybeat-schedule")]  # its own, not `make run`'s
        for beat in (["--beat", *schedule], ["--no-beat"]):
            children.append(subprocess.Popen([*manage, "worker", *beat, "--loglevel", "warning"], cwd=HERE))
        web_ports = [free_port(), free_port()]
        for web_port in web_ports:
            children.append(start_web(web_port))  # deploy/systemd's command, as production runs it
        if behind_nginx:
            children.append(start_nginx(port, web_ports, here / "nginx"))
            click.echo(f"qa_notify: nginx on http://{host}:{port} in front of web processes {web_ports}", err=True)
        else:
            urls = ", ".join(f"http://127.0.0.1:{p}" for p in web_ports)
            click.echo(f"qa_notify: nginx is not installed, so the web processes answer on their own: {urls}", err=True)
        click.echo("two workers (one with beat); Ctrl-C stops everything", err=True)
        _supervise(children)
    finally:
        _stop_all(children)
        if broker is not None:
            broker.stop()
        cluster.stop()


def _prepare_database(seed: bool) -> None:
    from flask_migrate import upgrade
    from sqlalchemy import func, select

    from qa_notify.models import User

    app = create_app()
    with app.app_context():
        upgrade()
        from qa_notify.extensions import db

        if seed and not db.session.scalar(select(func.count()).select_from(User)):
            app.test_cli_runner().invoke(args=["seed-demo"], catch_exceptions=False)
            click.echo("demo data added; log in as alice / demo-pass-123 (admin)", err=True)


def _supervise(children: list[subprocess.Popen]) -> None:
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


def _stop_all(children: list[subprocess.Popen]) -> None:
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


if __name__ == "__main__":
    cli()
