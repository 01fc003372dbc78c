"""The gevent WSGI server ``manage.py web`` runs: thousands of mostly idle streams per process."""

from __future__ import annotations

import socket

from flask import Flask
from gevent.pywsgi import WSGIHandler, WSGIServer

# pywsgi gives every connection an 8 KiB read buffer and keeps it for the connection's
# life. A stream's request is read once and then the connection idles for hours, so that
# buffer was the largest single cost of an open stream; 1 KiB still reads a request line
# and headers in a few reads, and larger bodies bypass the buffer.
READ_BUFFER = 1024


class LeanHandler(WSGIHandler):
    """pywsgi's handler with a small per-connection read buffer and Nagle's algorithm off."""

    def __init__(self, sock, address, server, rfile=None) -> None:
        # Events are small writes: with Nagle on, the second of two quick events waits for
        # the client's delayed ACK of the first (40 ms on Linux).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().__init__(sock, address, server, rfile if rfile is not None else sock.makefile("rb", READ_BUFFER))


def make_server(app: Flask, host: str, port: int) -> WSGIServer:
    """A gevent WSGI server for ``app`` with a deep accept queue (after a restart thousands of
    browsers reconnect at once)."""
    return WSGIServer((host, port), app, log=None, error_log="default", backlog=4096, handler_class=LeanHandler)
