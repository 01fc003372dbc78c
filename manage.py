"""qa_notify's command line: ``python manage.py run`` starts everything on a laptop.

``run``     embedded Redis (unless REDIS_URL), migrations, demo data, a Celery worker and
            the gevent web server; Ctrl-C or SIGTERM stops them all.
``web``     the gevent web server: what ``run`` starts, and what production runs (one per port).
``worker``  a Celery worker (add ``--beat`` on exactly one of them).
``run-cluster``  the scaled-out topology on one machine: Valkey cluster, broker, nginx, 2+2.
Plus the app's commands: init-db, create-user, seed-demo, notify, broadcast.

``run`` and ``run-cluster`` are laptop tooling: their work lives in the ``devstack`` package,
imported inside those two commands only, so ``web`` and ``worker`` never load it.
"""

import sys

if len(sys.argv) > 1 and sys.argv[1] == "web":
    # Must happen before anything imports socket or threading.
    from gevent import monkey

    monkey.patch_all()

import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
from pathlib import Path  # noqa: E402

import click  # noqa: E402
from flask.cli import FlaskGroup  # noqa: E402

from config import INSTANCE_DIR, config_for  # noqa: E402
from qa_notify import create_app  # noqa: E402
from qa_notify.logs import configure_logging  # noqa: E402

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
    from devstack.run import run_laptop  # laptop tooling: loaded only by this command

    run_laptop(host, port, seed)


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
    from devstack.run import run_cluster as start_cluster  # laptop tooling: loaded only by this command

    start_cluster(host, port, seed, state_dir)


if __name__ == "__main__":
    cli()
