"""Errors and their answers: the one base of refusals (``SiteError``, with its HTTP status), JSON
for API and stream clients, a friendly page for browsers."""

from __future__ import annotations

import logging

import redis
import sqlalchemy.exc
from flask import Flask, jsonify, make_response, render_template, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from .logs import request_id

log = logging.getLogger(__name__)

# What a page says for an HTTP error that carries no message of ours (werkzeug's own words).
PAGE_MESSAGES = {
    400: _l("The request was not one this page understands."),
    401: _l("Log in to see this page."),
    403: _l("You may not see this page."),
    404: _l("That page does not exist."),
    405: _l("That page does not take this kind of request."),
    413: _l("What you sent is too large."),
    429: _l("Too many requests; wait a moment and try again."),
}


class SiteError(Exception):
    """A request refused for a reason the user can act on; ``status`` is the HTTP status.

    The one base of the site's refusals (``QAError``, ``AccountError``, ``BroadcastError``,
    ``RoleError``, ``APIError``): uncaught, it is answered ``{"error": message}`` on the API
    and a page with the message elsewhere; pages that show it on a form catch it first.
    """

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def error_response(status: int, message: str):
    """Return a JSON error response carrying the request's id (what to quote to an operator)."""
    return make_response(jsonify(error=message, request_id=request_id()), status)


def wants_json() -> bool:
    """True for API and stream requests, which get JSON errors."""
    path = request.path
    return path.startswith("/api/") or path == "/notifications" or request.accept_mimetypes.best == "application/json"


def register(app: Flask) -> None:
    """Install the error handlers on ``app``."""
    app.register_error_handler(SiteError, site_error)
    app.register_error_handler(CSRFError, csrf_error)
    app.register_error_handler(HTTPException, http_error)
    for outage in (
        sqlalchemy.exc.TimeoutError,
        sqlalchemy.exc.OperationalError,
        redis.ConnectionError,
        redis.TimeoutError,
    ):
        app.register_error_handler(outage, backend_unavailable)
    app.register_error_handler(Exception, unexpected_error)


def site_error(exc: SiteError):
    """Answer a refusal with its status: JSON on the API, its message on a page."""
    if wants_json():
        return error_response(exc.status, exc.message)
    return render_template("error.html", code=exc.status, message=exc.message), exc.status


def csrf_error(exc: CSRFError):
    """Answer a failed CSRF check with 400, saying how to get a token (API) or to reload (page)."""
    message = f"CSRF check failed: {exc.description} Fetch a token from GET /api/csrf and send it as X-CSRFToken."
    if wants_json():
        return error_response(400, message)
    return render_template(
        "error.html",
        code=400,
        message=_("Your form expired. Go back, reload the page and try again."),
    ), 400


def http_error(exc: HTTPException):
    """Answer an HTTP error (404, 405, 413, ...) as JSON or a page, with ``Allow`` on a JSON 405."""
    message = "request body too large" if exc.code == 413 else exc.description or exc.name
    if wants_json():
        response = error_response(exc.code or 500, message)
        if exc.code == 405 and hasattr(exc, "valid_methods") and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response
    if exc.description == type(exc).description and exc.code in PAGE_MESSAGES:
        message = str(PAGE_MESSAGES[exc.code])  # werkzeug's English: say it in the reader's language
    return render_template("error.html", code=exc.code, message=message), exc.code


def backend_unavailable(exc: Exception):
    """Answer 503 with ``Retry-After`` while the database or Redis is away."""
    # The database or Redis is unreachable, locked or out of free connections (a
    # reconnect storm): a condition to retry, not a bug. 503 + Retry-After tells
    # browsers and proxies so.
    from .extensions import db

    db.session.rollback()
    log.warning("%s %s: backend unavailable: %s", request.method, request.path, exc)
    message = _("the service is briefly unavailable; retry in a few seconds")
    if wants_json():
        response = error_response(503, message)
    else:
        response = make_response(render_template("error.html", code=503, message=message), 503)
    response.headers["Retry-After"] = "3"
    return response


def unexpected_error(exc: Exception):
    """Log a bug and answer 500, never a stack trace."""
    if isinstance(exc, HTTPException):
        return http_error(exc)
    from .extensions import db

    db.session.rollback()
    log.exception("unhandled error on %s %s", request.method, request.path)
    if wants_json():
        return error_response(500, _("internal error; it has been logged"))
    message = _("Something went wrong on our side. It has been logged; please try again.")
    return render_template("error.html", code=500, message=message), 500
