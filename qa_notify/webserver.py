"""The gevent WSGI server ``manage.py web`` runs: thousands of mostly idle streams per process.

Besides holding idle streams cheaply, it protects the process's file descriptors from
clients that connect and never finish a request (slowloris): the request line and headers
must arrive within ``WEB_HEADER_TIMEOUT_SECONDS`` (which also bounds the idle gap between
keep-alive requests), and at most ``WEB_MAX_PENDING_CONNECTIONS`` connections may be
waiting for theirs: beyond that, the one that has waited longest is closed. A real
client sends its headers at once, so only the slow ones are ever pushed out. Once a
request is read there is no timeout: a stream then idles for hours.
"""

from __future__ import annotations

import contextlib
import socket

from flask import Flask
from gevent.pywsgi import WSGIHandler, WSGIServer

# pywsgi gives every connection an 8 KiB read buffer and keeps it for the connection's
# life. A stream's request is read once and then the connection idles for hours, so that
# buffer was the largest single cost of an open stream; 1 KiB still reads a request line
# and headers in a few reads, and larger bodies bypass the buffer.
READ_BUFFER = 1024
# The WSGI environ key under which the app finds the connection's socket (gunicorn's
# gevent worker offers ``gunicorn.socket``): streams watch it to notice a client leaving.
SOCKET_KEY = "qa_notify.socket"


class LeanHandler(WSGIHandler):
    """pywsgi's handler with a small read buffer, Nagle off, and a deadline for request headers."""

    def __init__(self, sock, address, server, rfile=None) -> None:
        # Events are small writes: with Nagle on, the second of two quick events waits for
        # the client's delayed ACK of the first (40 ms on Linux).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._waiting = False
        super().__init__(sock, address, server, rfile if rfile is not None else sock.makefile("rb", READ_BUFFER))

    def handle_one_request(self):
        """Read and serve one request; the line and headers must come within the deadline."""
        server = self.server
        if len(server.waiting) >= server.max_waiting:
            next(iter(server.waiting))._push_out()  # the longest-waiting connection
        server.waiting[self] = None
        self._waiting = True
        self.socket.settimeout(server.header_timeout)
        try:
            return super().handle_one_request()
        finally:
            self._stop_waiting()

    def read_request(self, raw_requestline):
        """Parse the request; from here on there is no deadline (streams idle for hours)."""
        result = super().read_request(raw_requestline)
        self._stop_waiting()
        self.socket.settimeout(None)
        return result

    def get_environ(self):
        """The WSGI environ, with the connection's socket for the stream to watch."""
        environ = super().get_environ()
        environ[SOCKET_KEY] = self.socket
        return environ

    def _stop_waiting(self) -> None:
        if self._waiting:
            self._waiting = False
            self.server.waiting.pop(self, None)

    def _push_out(self) -> None:
        """Close a connection still waiting for its headers: its pending read ends at once."""
        self._stop_waiting()
        with contextlib.suppress(OSError):  # already gone
            self.socket.shutdown(socket.SHUT_RDWR)


def make_server(app: Flask, host: str, port: int) -> WSGIServer:
    """A gevent WSGI server for ``app`` with a deep accept queue (after a restart thousands of
    browsers reconnect at once) and the header deadline and cap from the app's settings."""
    server = WSGIServer((host, port), app, log=None, error_log="default", backlog=4096, handler_class=LeanHandler)
    server.header_timeout = app.config["WEB_HEADER_TIMEOUT_SECONDS"]
    server.max_waiting = app.config["WEB_MAX_PENDING_CONNECTIONS"]
    server.waiting = {}  # handlers waiting for request headers, oldest first
    return server
