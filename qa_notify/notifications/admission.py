"""Admission of new streams: refuse them cheaply while the process drains or is flooded."""

from __future__ import annotations

import json
import random

from flask import Flask

STREAM_PATH = "/notifications"


class StreamAdmission:
    """WSGI middleware in front of the app: a new stream is refused with a 503 before any work
    (no session, no user, no Redis) while the process drains after SIGTERM, or while
    ``SSE_MAX_OPENING`` streams are still being opened in it (a reconnect storm).

    Opening a stream costs a few milliseconds of CPU (session, user, Redis lease and
    subscription). When browsers arrive faster than that, queueing them made every one wait
    until the Redis pool or the client timed out; a 503 with a jittered ``Retry-After``
    costs tens of microseconds and spreads them out (the page retries with backoff, and
    nginx passes the request to the next process).
    """

    def __init__(self, app: Flask, wsgi_app) -> None:
        self.app = app
        self.wsgi_app = wsgi_app
        self.limit = app.config["SSE_MAX_OPENING"]
        self.opening = 0  # one process, one thread of greenlets: a plain count
        self.refused = 0

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != STREAM_PATH:
            return self.wsgi_app(environ, start_response)
        if self.app.extensions.get("qa_draining"):
            return self._refuse(start_response, "this server is restarting; reconnecting elsewhere", 1)
        if self.opening >= self.limit:
            return self._refuse(
                start_response, "too many streams opening at once; retrying shortly", random.randint(1, 5)
            )
        self.opening += 1
        try:
            return self.wsgi_app(environ, start_response)  # a stream's body is returned once it is attached
        finally:
            self.opening -= 1

    def _refuse(self, start_response, message: str, retry_after: int) -> list[bytes]:
        self.refused += 1
        body = json.dumps({"error": message}).encode()
        start_response(
            "503 SERVICE UNAVAILABLE",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Retry-After", str(retry_after)),
                ("Cache-Control", "no-store"),
            ],
        )
        return [body]


def register_stream_admission(app: Flask) -> None:
    """Put ``StreamAdmission`` in front of ``app`` (outermost, so a refusal costs nothing else)."""
    admission = app.extensions["qa_admission"] = StreamAdmission(app, app.wsgi_app)
    app.wsgi_app = admission
