"""A load-generating process: many SSE connections with gevent and raw sockets.

Run as ``python -m bench.sse_clients`` with a JSON job on stdin:
``{"port": 5000, "path": "/notifications", "cookies": {"<uid>": "<session cookie>"},
"cookie_name": "session", "seconds": 60, "source": "127.0.0.2"}``. ``path`` may contain ``{uid}``; a ``null``
``cookie_name`` sends no cookie; ``connect_per_second`` paces the connects (default 4,000). It prints JSON lines: ``{"ready": n}`` once every stream
has sent its first bytes (or, with ``"ready_on": "connect"``, once every request is sent:
flask-sse answers nothing until its first event), then ``{"uid", "type", "t", "data"}``
per event as ``E<tab>uid<tab>type<tab>t<tab>data`` (``t`` = receive time, time.time();
``data`` a JSON string; written at most ``FLUSH_SECONDS`` after it arrived), and stops after ``seconds`` or when stdin
closes. A line ``stats`` on stdin makes it print ``{"heartbeats": n, "open": n}`` (heartbeat
comments received so far, streams still open).
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402


def emit(obj: dict) -> None:
    """Write one JSON line (a count, a state), at once."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def emit_event(uid: str, event_type: str, t: float, data: str) -> None:
    """Write one event as ``E<tab>uid<tab>type<tab>t<tab>data as a JSON string``: cheaper to
    write and to read than a JSON object, for the many thousands a broadcast brings at once.
    It goes out with the next flush."""
    sys.stdout.write(f"E\t{uid}\t{event_type}\t{t!r}\t{json.dumps(data)}\n")


FLUSH_SECONDS = 0.02


def flush_events() -> None:
    while True:
        gevent.sleep(FLUSH_SECONDS)
        sys.stdout.flush()


def stream(port: int, path: str, cookie: str | None, uid: str, ready: list, all_ready: Event, errors: list) -> None:
    """Hold one SSE connection; report each event. With ``retry`` in the job, a refused
    attempt (503, 429, 502/504 from a proxy, a failed connect) is tried again as the site's
    page does: after 1 s, doubling to 30 s, each delay jittered 0.5-1.5x."""
    delay = 1.0
    give_up = time.monotonic() + CONNECT_TIMEOUT[0]
    while True:
        outcome = _hold(port, path, cookie, uid, ready, all_ready)
        if outcome is None:
            return
        if not RETRY[0] or time.monotonic() + delay > give_up:
            _fail(outcome, all_ready)
            return
        REFUSED[0] += 1
        gevent.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 30.0)


def _hold(port: int, path: str, cookie: str | None, uid: str, ready: list, all_ready: Event) -> str | None:
    """One attempt: None once the stream was held and ended, else why it was refused."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=60, source_address=(SOURCE[0], 0))
    except OSError as exc:
        return str(exc)
    try:
        cookie_line = f"Cookie: {cookie}\r\n" if cookie else ""
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n{cookie_line}\r\n".encode())
        buf = b""
        first = True
        if READY_ON_CONNECT[0]:
            _mark_ready(uid, ready, all_ready)
        event_type, data = None, []
        sock.settimeout(None)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                if first:
                    return "closed before answering"
                CLOSED[0] += 1
                return None
            now = time.time()
            if first:
                first = False
                if not chunk.startswith(b"HTTP/1.1 200"):
                    return chunk[:80].decode("latin-1")
                if not READY_ON_CONNECT[0]:
                    _mark_ready(uid, ready, all_ready)
            buf += chunk
            while b"\n\n" in buf:
                block, buf = buf.split(b"\n\n", 1)
                for line in block.decode("utf-8", "replace").split("\n"):
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value  # "event:x" and "event: x" alike
                    if not name and value == "heartbeat":
                        HEARTBEATS[0] += 1
                    elif name == "event":
                        event_type = value
                    elif name == "data":
                        data.append(value)
                event_type = event_type or ("message" if data else None)
                if event_type and data:
                    emit_event(uid, event_type, now, "\n".join(data))
                event_type, data = None, []
    except OSError as exc:
        if first:
            return str(exc)
        CLOSED[0] += 1
        return None
    finally:
        sock.close()


def _mark_ready(uid: str, ready: list, all_ready: Event) -> None:
    ready.append(uid)
    if len(ready) + len(ERRORS[0]) >= TOTAL[0]:
        all_ready.set()


def _fail(message: str, all_ready: Event) -> None:
    ERRORS[0].append(message)
    if len(READY[0]) + len(ERRORS[0]) >= TOTAL[0]:
        all_ready.set()


TOTAL = [0]
HEARTBEATS = [0]
REFUSED = [0]  # attempts refused and tried again (with "retry")
RETRY = [False]
CONNECT_TIMEOUT = [120.0]
CLOSED = [0]  # streams the server ended after they were ready
SOURCE = ["127.0.0.1"]  # the address connections come from: one address has ~28k ephemeral ports
READY: list[list] = [[]]
ERRORS: list[list] = [[]]
READY_ON_CONNECT = [False]


def main() -> None:
    job = json.loads(sys.stdin.readline())
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    cookies = job["cookies"]
    TOTAL[0] = len(cookies)
    READY_ON_CONNECT[0] = job.get("ready_on") == "connect"
    SOURCE[0] = job.get("source", "127.0.0.1")
    RETRY[0] = bool(job.get("retry"))
    CONNECT_TIMEOUT[0] = job.get("connect_timeout", 120)
    ready: list = []
    errors: list = []
    ERRORS[0] = errors
    READY[0] = ready
    all_ready = Event()
    name = job.get("cookie_name", "session")
    greenlets = []
    for i, (uid, cookie) in enumerate(cookies.items()):
        greenlets.append(
            gevent.spawn(
                stream,
                job["port"],
                job.get("path", "/notifications").format(uid=uid),
                f"{name}={cookie}" if name else None,
                uid,
                ready,
                all_ready,
                errors,
            )
        )
        if i % 50 == 49:
            gevent.sleep(50 / job.get("connect_per_second", 4000))  # paced, as browsers arrive
    all_ready.wait(timeout=job.get("connect_timeout", 120))
    emit({"ready": len(ready), "errors": len(errors), "error_sample": errors[:3]})
    stop = Event()

    def watch_stdin():
        # A plain stdin read would block every greenlet: read it on gevent's thread pool.
        # "stats" asks for the counts so far; anything else (or EOF) stops.
        while gevent.get_hub().threadpool.spawn(sys.stdin.readline).get().strip() == "stats":
            emit({"heartbeats": HEARTBEATS[0], "open": len(ready) - CLOSED[0], "refused": REFUSED[0]})
        stop.set()

    gevent.spawn(watch_stdin)
    gevent.spawn(flush_events)
    stop.wait(timeout=job.get("seconds", 60))
    emit({"done": True})
    gevent.killall(greenlets, block=False)


if __name__ == "__main__":
    main()
