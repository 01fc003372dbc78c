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
import logging
import socket

import gevent
import greenlet
from flask import Flask
from gevent.pywsgi import LoggingLogAdapter, WSGIHandler, WSGIServer

# pywsgi gives every connection an 8 KiB read buffer and keeps it for the connection's
# life. A stream's request is read once and then the connection idles for hours, so that
# buffer was the largest single cost of an open stream; 1 KiB still reads a request line
# and headers in a few reads, and larger bodies bypass the buffer.
READ_BUFFER = 1024
# The WSGI environ key under which the app finds the connection's socket (gunicorn's
# gevent worker offers ``gunicorn.socket``): streams watch it to notice a client leaving.
SOCKET_KEY = "qa_notify.socket"
# The environ key under which the app finds how the handler frames one write of the body on
# the wire (``LeanHandler.wire``): a stream sends some events itself (``live.wire``).
WIRE_KEY = "qa_notify.wire"
# What a connection's handler still needs of the WSGI environ once the application has
# answered: pywsgi only prints it (values masked) with an error that ends the response.
# The full environ (a 24-key dict, the Cookie header, ...) cost ~1.5 KB per open stream.
ENVIRON_KEPT = ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "REMOTE_ADDR")


class LeanHandler(WSGIHandler):
    """pywsgi's handler with a small read buffer, Nagle off, and a deadline for request headers."""

    def __init__(self, sock, address, server, rfile=None) -> None:
        # Events are small writes: with Nagle on, the second of two quick events waits for
        # the client's delayed ACK of the first (40 ms on Linux).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._waiting = False
        self._opening = False
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

    def run_application(self):
        """Call the application (and, through ``process_result``, send its answer)."""
        self._opening = self.path.partition("?")[0] == self.server.stream_path
        if self._opening:
            self.server.opening_started()
        try:
            super().run_application()
        finally:
            self._opened()

    def process_result(self):
        """Send the response, having first dropped what only served to call the application."""
        self._opened()
        self._forget_request()
        super().process_result()

    def _opened(self) -> None:
        """The application has answered (a stream is attached and sends from now on)."""
        if self._opening:
            self._opening = False
            self.server.opening_done()

    def _forget_request(self) -> None:
        """Drop the parsed request headers and all but a few keys of the environ.

        A stream's handler lives as long as the stream: the headers (~1.2 KB of email.message
        objects, already copied into the environ) and the environ would otherwise stay for
        hours. A later request on the connection parses its own. (A method of its own: a
        local in ``process_result``, whose frame lives as long as the stream, would keep
        the old environ alive.)
        """
        self.__dict__.pop("headers", None)  # pywsgi's class default (empty headers) remains
        environ = self.environ
        self.environ = {key: environ[key] for key in ENVIRON_KEPT if key in environ}

    def _write_with_headers(self, data):
        """Send the status line, headers and first chunk in one write (pywsgi makes two: two
        packets, two trips through the kernel and the proxy); then forget the encoded
        headers (kept by pywsgi for the connection's life: ~0.6 KB per open stream)."""
        self.headers_sent = True
        self.finalize_headers()
        towrite = bytearray(b"HTTP/1.1 %s\r\n" % self.status)  # status and headers: latin-1 bytes already
        for header, value in self.response_headers:
            towrite += b"%s: %s\r\n" % (header, value)
        towrite += b"\r\n"
        if data:  # an application may yield empty bytes; pywsgi writes nothing for them
            towrite += self.wire(data)
        self._sendall(towrite)
        self.response_headers = None

    def get_environ(self):
        """The WSGI environ, with the connection's socket for the stream to watch and write to."""
        environ = super().get_environ()
        environ[SOCKET_KEY] = self.socket
        environ[WIRE_KEY] = self.wire
        return environ

    def wire(self, data: bytes) -> bytes:
        """Return the bytes this handler puts on the wire for one write of the body (after the headers).

        A chunk of chunked transfer encoding, as ``pywsgi.WSGIHandler._write`` frames it, or
        ``data`` itself when the response is not chunked.
        """
        if self.response_use_chunked:
            return b"%x\r\n%s\r\n" % (len(data), data)
        return data

    def _stop_waiting(self) -> None:
        if self._waiting:
            self._waiting = False
            self.server.waiting.pop(self, None)

    def _push_out(self) -> None:
        """Close a connection still waiting for its headers: its pending read ends at once."""
        self._stop_waiting()
        with contextlib.suppress(OSError):  # already gone
            self.socket.shutdown(socket.SHUT_RDWR)


def in_own_greenlet(app: Flask):
    """Wrap ``app`` so each call runs in a short-lived greenlet of its own (a child of the
    connection's greenlet, which waits for it: exceptions and the result come back as from
    a plain call).

    On Python 3.11 every greenlet keeps its own 16 KiB chunk of Python frame stack for as
    long as it lives, and the memory pages the deepest call touched stay resident. Logging
    a request in and answering it (Flask, Flask-Login, SQLAlchemy, redis-py) runs deep
    enough to touch a second 4 KiB page; a stream then idles in a dozen frames. Run in the
    connection's greenlet, that page stayed resident for the stream's life; in a child, it
    goes when the child returns. Measured: -3.7 KB of RSS per idle stream (2,000 streams),
    for one short-lived greenlet per request.
    """

    def application(environ, start_response):
        return greenlet.greenlet(app).switch(environ, start_response)

    return application


class LeanServer(WSGIServer):
    """pywsgi's server that stops accepting connections while ``max_opening`` streams are being
    opened (a reconnect storm), and starts again as soon as one is open.

    Opening a stream costs a few milliseconds of CPU (session, user, Redis lease and
    subscription). When browsers arrive faster than that, accepting them all only queues
    work in the process, until the Redis pool or the clients time out; refusing them (503)
    costs CPU too. Not accepting leaves them in the kernel's accept queue (``backlog``) at
    no cost, and the process takes them in as fast as it can open their streams. Only
    stream openings count: a request in progress elsewhere (a long poll) never stops it.
    """

    stream_path = "/notifications"
    max_opening = 200
    opening = 0

    def full(self) -> bool:
        """Checked by gevent before each accept: True stops accepting (see ``opening_done``)."""
        return self.opening >= self.max_opening

    def opening_started(self) -> None:
        self.opening += 1

    def opening_done(self) -> None:
        self.opening -= 1
        # gevent stopped accepting when ``full()``; without a pool nothing else starts it again.
        if self.opening < self.max_opening and self._watcher is None and self._timer is None:
            self._start_accepting_if_started()


def make_server(app: Flask, host: str, port: int) -> LeanServer:
    """A gevent WSGI server for ``app`` with a deep accept queue (after a restart thousands of
    browsers reconnect at once), the header deadline and cap, and the cap on streams being
    opened at once, from the app's settings.

    Connections are served by raw greenlets (``spawn_raw``): a ``gevent.Greenlet`` per
    connection also kept its spawning stack and a dict, and a deeper saved C stack (~0.7 KB).
    Without a pool ``stop()`` never killed handlers anyway, and ``gevent.kill`` (a stalled
    stream being cut off) works on raw greenlets too.
    """
    server = LeanServer(
        (host, port),
        in_own_greenlet(app),
        log=None,  # the app writes the access lines (qa_notify.logs), one per request
        # Malformed requests and the like: through logging, in the process's format.
        error_log=LoggingLogAdapter(logging.getLogger("gevent.pywsgi"), logging.WARNING),
        backlog=4096,
        handler_class=LeanHandler,
        spawn=gevent.spawn_raw,
    )
    server.header_timeout = app.config["WEB_HEADER_TIMEOUT_SECONDS"]
    server.max_waiting = app.config["WEB_MAX_PENDING_CONNECTIONS"]
    server.waiting = {}  # handlers waiting for request headers, oldest first
    server.max_opening = app.config["SSE_MAX_OPENING"]
    return server
