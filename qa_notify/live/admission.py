"""Admission of new streams: refuse them cheaply while the process drains."""

from __future__ import annotations

import json

from flask import Flask

STREAM_PATH = "/notifications"


class StreamAdmission:
    """WSGI middleware in front of the app: while the process drains after SIGTERM, a new
    stream is refused with a 503 before any work (no session, no user, no Redis), so the
    browser (or nginx, which then tries the next process) goes elsewhere.

    A reconnect storm is held off one step earlier, by the server itself: it stops accepting
    connections while ``SSE_MAX_OPENING`` streams are being opened (``webserver.LeanServer``).
    """

    def __init__(self, app: Flask, wsgi_app) -> None:
        self.app = app
        self.wsgi_app = wsgi_app
        self.refused = 0

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == STREAM_PATH and self.app.extensions.get("qa_draining"):
            return self._refuse(start_response, "this server is restarting; reconnecting elsewhere", 1)
        return self.wsgi_app(environ, start_response)

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
    app.wsgi_app = admission  # type: ignore[method-assign]
