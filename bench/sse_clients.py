"""A load-generating process: many SSE connections with gevent and raw sockets.

Run as ``python -m bench.sse_clients`` with a JSON job on stdin:
``{"port": 5000, "path": "/notifications", "cookies": {"<uid>": "<session cookie>"},
"cookie_name": "session", "seconds": 60}``. It prints JSON lines: ``{"ready": n}`` once
every stream has sent its first bytes, then ``{"uid", "type", "t", "data"}`` per event
(``t`` = receive time, time.time()), and stops after ``seconds`` or when stdin closes.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import resource  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def stream(port: int, path: str, cookie: str, uid: str, ready: list, all_ready: Event, errors: list) -> None:
    """Hold one SSE connection; report each event."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\nCookie: {cookie}\r\n\r\n".encode()
        )
        buf = b""
        first = True
        event_type, data = None, []
        sock.settimeout(None)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return
            now = time.time()
            if first:
                first = False
                if not chunk.startswith(b"HTTP/1.1 200"):
                    errors.append(chunk[:80].decode("latin-1"))
                    return
                ready.append(uid)
                if len(ready) + len(errors) >= TOTAL[0]:
                    all_ready.set()
            buf += chunk
            while b"\n\n" in buf:
                block, buf = buf.split(b"\n\n", 1)
                for line in block.decode("utf-8", "replace").split("\n"):
                    if line.startswith("event: "):
                        event_type = line[7:]
                    elif line.startswith("data: "):
                        data.append(line[6:])
                if event_type and data:
                    emit({"uid": uid, "type": event_type, "t": now, "data": "\n".join(data)})
                event_type, data = None, []
    except OSError as exc:
        errors.append(str(exc))


TOTAL = [0]


def main() -> None:
    job = json.loads(sys.stdin.readline())
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    cookies = job["cookies"]
    TOTAL[0] = len(cookies)
    ready: list = []
    errors: list = []
    all_ready = Event()
    name = job.get("cookie_name", "session")
    greenlets = []
    for i, (uid, cookie) in enumerate(cookies.items()):
        greenlets.append(
            gevent.spawn(
                stream,
                job["port"],
                job.get("path", "/notifications"),
                f"{name}={cookie}",
                uid,
                ready,
                all_ready,
                errors,
            )
        )
        if i % 200 == 199:
            gevent.sleep(0.05)  # do not flood the listen backlog
    all_ready.wait(timeout=job.get("connect_timeout", 120))
    emit({"ready": len(ready), "errors": len(errors), "error_sample": errors[:3]})
    stop = Event()

    def watch_stdin():
        # A plain stdin read would block every greenlet: read it on gevent's thread pool.
        gevent.get_hub().threadpool.spawn(sys.stdin.readline).get()
        stop.set()

    gevent.spawn(watch_stdin)
    stop.wait(timeout=job.get("seconds", 60))
    emit({"done": True})
    gevent.killall(greenlets, block=False)


if __name__ == "__main__":
    main()
