"""Connections against careless and hostile clients, over real sockets to a real web process.

A stream the client closed gives its slot back at once; a connection that never finishes
its request headers is closed after the deadline, and a flood of them cannot push out
the clients that do send their requests.
"""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from qa_notify.events import channels
from qa_notify.events.connections import make_client

from .live import WebProcess, read_events


@pytest.fixture(scope="module")
def web(redis_url, database_url):
    proc = WebProcess(
        database_url,
        redis_url,
        SSE_MAX_STREAMS_PER_USER="2",
        SSE_HEARTBEAT_SECONDS="60",  # so only the hang-up watcher can notice a closed stream
        WEB_HEADER_TIMEOUT_SECONDS="1",
        WEB_MAX_PENDING_CONNECTIONS="5",
    ).start()
    yield proc
    proc.stop()


def open_stream(client: httpx.Client) -> httpx.Response:
    resp = client.send(client.build_request("GET", "/notifications"), stream=True)
    return resp


def test_a_closed_stream_gives_its_slot_back_at_once(web, login_as, redis_url):
    user = login_as("reloader")
    client = web.client("reloader")
    leases = channels.user_connections(user.user_id)
    r = make_client(redis_url)
    for _ in range(3):  # reload two tabs three times: never a 429
        tabs = [open_stream(client) for _ in range(2)]
        assert [t.status_code for t in tabs] == [200, 200]
        assert r.zcard(leases) == 2
        for tab in tabs:
            tab.close()
        deadline = time.monotonic() + 2
        while r.zcard(leases):
            assert time.monotonic() < deadline, "closed streams still hold their slots"
            time.sleep(0.05)
    assert web.metric("qa_notify_open_streams") == 0


def test_a_connection_that_never_finishes_its_headers_is_closed(web):
    sock = socket.create_connection(("127.0.0.1", web.port))
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # ...and never the blank line
    sock.settimeout(5)
    started = time.monotonic()
    while sock.recv(1000):  # at most a 400, then the server closes it
        pass
    assert time.monotonic() - started < 3
    sock.close()


def test_an_open_stream_outlives_the_header_deadline(web, login_as, app):
    from qa_notify.events import bus
    from qa_notify.events.types import ReadEvent

    user = login_as("patient")
    opened = threading.Event()
    result = {}

    def listen():
        result["events"] = read_events(web.client("patient"), 1, timeout=10, opened=opened)

    reader = threading.Thread(target=listen)
    reader.start()
    assert opened.wait(10)
    time.sleep(2)  # twice the header deadline, with no heartbeat in between
    with app.app_context():
        bus.push_live(bus.redis_client(), user.user_id, ReadEvent(ids=[7], all=False, unread_count=0))
    reader.join(10)
    assert [e.event for e in result["events"]] == ["read"]


def test_a_flood_of_unfinished_requests_cannot_lock_out_real_clients(web):
    flood = []
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", web.port))
        sock.sendall(b"GET / HTTP/1.1\r\n")
        flood.append(sock)
    started = time.monotonic()
    assert httpx.get(web.url + "/healthz", timeout=5).status_code == 200
    assert time.monotonic() - started < 1  # answered at once, not after the flood times out
    time.sleep(0.3)
    still_open = 0
    for sock in flood:
        sock.setblocking(False)
        try:
            still_open += sock.recv(1) != b""
        except BlockingIOError:
            still_open += 1  # nothing to read: the server still holds it
        sock.close()
    assert still_open <= 5  # at most WEB_MAX_PENDING_CONNECTIONS wait at once
