"""The production web server, started exactly as ``deploy/systemd/qa-notify-web@.service`` says.

The command comes from the unit file itself (``local_cluster.unit_command``), so what is
tested here is what an operator runs: a stream works, a connection that never finishes
its headers is closed at the deadline, and SIGTERM drains the process (streams end with a
reconnect hint, ``/readyz`` and new streams answer 503, then the process exits).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from devstack.local_cluster import WEB_UNIT, unit_command

from .live import REPO, WebProcess, free_port

HEADER_TIMEOUT_S = 2
DRAIN_S = 6


@pytest.fixture
def production(redis_url, database_url, app):
    """One web process with production settings, as the unit starts it (plain HTTP on loopback,
    so the session cookie is not marked Secure)."""
    proc = WebProcess(
        database_url,
        redis_url,
        QA_NOTIFY_ENV="production",
        SECRET_KEY="a-long-random-production-secret-for-this-test-only",
        SESSION_COOKIE_SECURE="0",
        WEB_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT_S),
        WEB_DRAIN_SECONDS=str(DRAIN_S),
    ).start()
    yield proc
    proc.kill()


def test_the_unit_runs_the_lean_gevent_server_from_this_checkout():
    argv, _ = unit_command(WEB_UNIT, "8001")
    assert argv[1:] == ["manage.py", "web", "--host", "127.0.0.1", "--port", "8001"]


def _stream_lines(client: httpx.Client, lines: list[str], opened: threading.Event) -> None:
    """Read the raw stream into ``lines`` until the server ends it; a broken end adds ``"<broken>"``."""
    try:
        with client.stream("GET", "/notifications", timeout=30) as resp:
            assert resp.status_code == 200
            opened.set()
            for line in resp.iter_lines():
                lines.append(line)
    except httpx.HTTPError:
        lines.append("<broken>")


def test_a_stream_delivers_an_event(production, make_user, app):
    from qa_notify.events import bus
    from qa_notify.events.types import ReadEvent

    user = make_user("ann")
    lines: list[str] = []
    opened = threading.Event()
    reader = threading.Thread(target=_stream_lines, args=(production.client("ann"), lines, opened), daemon=True)
    reader.start()
    assert opened.wait(15), "the stream did not open"
    with app.app_context():
        bus.push_live(bus.redis_client(), user.id, ReadEvent(ids=[7], all=False, unread_count=0))
    deadline = time.monotonic() + 15
    while "event: read" not in lines:
        assert time.monotonic() < deadline, f"no event on the stream: {lines}"
        time.sleep(0.05)
    data = next(line for line in lines if line.startswith("data: "))
    assert json.loads(data.removeprefix("data: "))["ids"] == [7]


def test_a_connection_that_never_finishes_its_headers_is_closed_at_the_deadline(production):
    sock = socket.create_connection(("127.0.0.1", production.port))
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # ...and never the blank line
    sock.settimeout(HEADER_TIMEOUT_S + 20)
    started = time.monotonic()
    try:
        while sock.recv(1000):  # at most an error answer, then the server closes it
            pass
    except TimeoutError:
        pytest.fail("the server kept a connection without headers open")
    finally:
        sock.close()
    waited = time.monotonic() - started
    assert HEADER_TIMEOUT_S - 0.5 <= waited < HEADER_TIMEOUT_S + 10


def test_sigterm_drains_streams_end_with_a_reconnect_hint_and_readyz_turns_503(production, make_user):
    make_user("ann")
    client = production.client("ann")
    assert client.get("/readyz").status_code == 200
    lines: list[str] = []
    opened = threading.Event()
    reader = threading.Thread(target=_stream_lines, args=(client, lines, opened), daemon=True)
    reader.start()
    assert opened.wait(15), "the stream did not open"
    production.process.send_signal(signal.SIGTERM)
    reader.join(15)
    assert not reader.is_alive(), "the stream was not ended on SIGTERM"
    assert "<broken>" not in lines  # a complete response, ended by the server
    hints = [int(line.removeprefix("retry: ")) for line in lines if line.startswith("retry: ")]
    # The opening hint (2-5 s), then the shutdown's: a quarter of it, so the browser is back soon.
    assert len(hints) == 2 and hints[1] == hints[0] // 4, lines
    assert not any(line.startswith("event: server_closed") for line in lines)  # not a sign-out

    # Draining: still listening, but not ready and taking no new stream.
    ready = client.get("/readyz")
    assert (ready.status_code, ready.json()["status"]) == (503, "draining")
    refused = client.get("/notifications")
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    assert "error" in refused.json()
    assert production.process.wait(DRAIN_S + 15) == 0


SLOW_OPENING_SERVER = """
from gevent import monkey; monkey.patch_all()
import sys, gevent
from flask import Flask
from qa_notify.webserver import make_server
app = Flask("slow")
app.config.update(WEB_HEADER_TIMEOUT_SECONDS=10, WEB_MAX_PENDING_CONNECTIONS=100, SSE_MAX_OPENING=1)
@app.get("/notifications")
def opening_slowly():
    print("opening", flush=True)
    gevent.sleep(1.5)  # a stream that takes long to open (a busy process)
    return "opened"
@app.get("/healthz")
def healthz():
    return "ok"
server = make_server(app, "127.0.0.1", int(sys.argv[1]))
print("listening", flush=True)
server.serve_forever()
"""


def test_a_process_busy_opening_streams_stops_accepting_until_one_is_open(tmp_path):
    """With SSE_MAX_OPENING streams being opened, new connections wait in the kernel's queue
    (no CPU spent on them) and are taken in as soon as one stream is open."""
    port = free_port()
    script = tmp_path / "slow_server.py"
    script.write_text(SLOW_OPENING_SERVER)
    proc = subprocess.Popen([sys.executable, str(script), str(port)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "listening"
        answered: dict[str, float] = {}

        def get(name: str, path: str) -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                assert client.get(path).status_code == 200
            answered[name] = time.monotonic()

        opening = threading.Thread(target=get, args=("stream", "/notifications"))
        opening.start()
        assert proc.stdout.readline().strip() == "opening"  # the one stream is being opened
        other = threading.Thread(target=get, args=("page", "/healthz"))
        other.start()
        opening.join(30)
        other.join(30)
        # The page's connection was not taken in while the stream was opening.
        assert answered["page"] >= answered["stream"] - 0.05
    finally:
        proc.kill()
        proc.wait()
