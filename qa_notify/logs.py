"""Logs: one configuration for every process, a request id, and one access line per request.

Every process (``manage.py web``, ``run``, ``worker`` and the Celery worker it becomes)
applies ``configure_logging``: LOG_LEVEL, and LOG_FORMAT ``text`` (for people) or ``json``
(one object per line, for a log collector), on stderr. Each request gets an id, taken
from a well-formed ``X-Request-ID`` (nginx's ``$request_id``) or made up; every line
logged while it is handled carries it, its response and JSON error body return it.
"""

from __future__ import annotations

import logging
import logging.config
import re
import time
import uuid
from contextvars import ContextVar
from urllib.parse import quote

from flask import Flask, Response, g, request

from config import config_for

REQUEST_ID_HEADER = "X-Request-ID"
WELL_FORMED_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
FORMATS = ("text", "json")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] req=%(request_id)s %(message)s"
# JSON: these fields first (renamed below), then a "time" in ISO 8601 UTC, then any extras
# of the line (the access line's method, path, status...).
JSON_FIELDS = ("levelname", "name", "process", "request_id", "message")
JSON_NAMES = {"levelname": "level", "name": "logger", "process": "pid"}

# The id of the request this greenlet (or thread) is handling. A contextvar, not a global:
# under gevent every greenlet has its own context, so concurrent requests never mix ids.
REQUEST_ID: ContextVar[str | None] = ContextVar("qa_notify_request_id", default=None)
access_log = logging.getLogger("qa_notify.access")


class RequestIdFilter(logging.Filter):
    """Stamp each line with the id of the request being handled (``missing`` outside one)."""

    def __init__(self, missing: str | None = None) -> None:
        super().__init__()
        self.missing = missing

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:  # a line may carry its own (``extra``)
            record.request_id = REQUEST_ID.get() or self.missing
        return True


def logging_config(level: str | int, log_format: str) -> dict:
    """Return the ``dictConfig`` for ``level`` and ``log_format``; ValueError names a bad one."""
    if log_format not in FORMATS:
        raise ValueError(f"LOG_FORMAT must be text or json, not {log_format!r}")
    name = logging.getLevelName(level) if isinstance(level, int) else level.strip().upper()
    if name not in LEVELS:
        raise ValueError(f"LOG_LEVEL must be one of {', '.join(LEVELS)}, not {level!r}")
    if log_format == "json":
        formatter = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": list(JSON_FIELDS),
            "rename_fields": JSON_NAMES,
            "timestamp": "time",
        }
    else:
        formatter = {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,  # module loggers made at import time keep working
        "filters": {"request_id": {"()": RequestIdFilter, "missing": "-" if log_format == "text" else None}},
        "formatters": {"main": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "main",
                "filters": ["request_id"],
            }
        },
        "root": {"level": name, "handlers": ["stderr"]},
        # Alembic names each of its plugins at INFO whenever a process starts: noise.
        "loggers": {"alembic.runtime.plugins": {"level": "WARNING"}},
    }


def configure_logging(level: str | int | None = None) -> None:
    """Log this process as LOG_LEVEL (or ``level``) and LOG_FORMAT say; ValueError if either is bad."""
    settings = config_for()
    logging.config.dictConfig(logging_config(level or settings.LOG_LEVEL, settings.LOG_FORMAT))
    logging.captureWarnings(True)  # warnings.warn() lines in the same format, not bare stderr


def request_id() -> str | None:
    """Return the id of the request being handled, or None outside a request."""
    return REQUEST_ID.get()


def init_request_logging(app: Flask) -> None:
    """Give every request of ``app`` an id and write one access line for it.

    Register before anything else that can refuse a request (CSRF, rate limits), so even a
    refused request has its id and its line.
    """
    app.before_request(_start_request)
    app.after_request(_finish_request)
    app.teardown_request(_end_request)
    app.jinja_env.globals["request_id"] = request_id  # the error page shows it


def _start_request() -> None:
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    REQUEST_ID.set(incoming if WELL_FORMED_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex)
    g.request_started = time.perf_counter()


def _finish_request(response: Response) -> Response:
    """Return the request id, and log the access line: for a stream, as it starts."""
    rid = REQUEST_ID.get()
    if rid is not None:
        response.headers[REQUEST_ID_HEADER] = rid
    started = g.get("request_started")
    duration_ms = round((time.perf_counter() - started) * 1000, 1) if started is not None else None
    # The user Flask-Login loaded for this request, if it did: asking ``current_user`` here
    # would load one (a session check and a query) for requests that never needed it.
    user = g.get("_login_user")
    user_id = user.id if user is not None and user.is_authenticated else None
    # The path and the query's keys, never its values (tokens, ids); quoted, so a path
    # cannot break a text line in two.
    path = quote(request.path, safe="/:@!$&'()*+,;=~")
    keys = [quote(key, safe="") for key in request.args]
    access_log.info(
        "%s %s%s %s %s ms %s user=%s",
        request.method,
        path,
        "?" + "&".join(keys) if keys else "",
        response.status_code,
        duration_ms,
        request.remote_addr,
        user_id or "-",
        extra={
            "method": request.method,
            "path": path,
            "query_keys": keys,
            "status": response.status_code,
            "duration_ms": duration_ms,
            "remote_addr": request.remote_addr,
            "user_id": user_id,
            "request_id": rid,
        },
    )
    return response


def _end_request(_exc: BaseException | None) -> None:
    # Served in-process (tests, the CLI) the thread outlives the request: forget its id.
    REQUEST_ID.set(None)
