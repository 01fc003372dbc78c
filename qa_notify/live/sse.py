"""The Server-Sent Events wire format, and nothing else.

Field values that end a line (CR, LF, CRLF) would let data forge new fields (flask-sse #40),
so ``event`` and ``id`` refuse them and ``data`` is split into one ``data:`` line per line.
"""

from __future__ import annotations

import re

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_FORBIDDEN_IN_FIELD = re.compile(r"[\r\n\x00]")


class SSEFieldError(ValueError):
    """Raised when an event name or id would break the SSE framing."""


def _single_line(name: str, value: str) -> str:
    if _FORBIDDEN_IN_FIELD.search(value):
        raise SSEFieldError(f"SSE {name} must not contain CR, LF or NUL: {value!r}")
    return value


def format_event(data: str, event: str | None = None, id: str | None = None, retry: int | None = None) -> bytes:
    """Return one SSE event as bytes, ending in the blank line that dispatches it."""
    lines = []
    if event is not None:
        lines.append("event: " + _single_line("event", event))
    if id is not None:
        lines.append("id: " + _single_line("id", id))
    if retry is not None:
        lines.append(f"retry: {int(retry)}")
    lines.extend("data: " + line for line in _LINE_BREAK.split(data))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def format_retry(retry_ms: int) -> bytes:
    """Return the reconnection-delay hint sent first on every stream."""
    return f"retry: {int(retry_ms)}\n\n".encode()


def format_comment(text: str = "") -> bytes:
    """Return a comment line: ignored by browsers, keeps proxies and dead-client detection busy."""
    return (": " + _LINE_BREAK.sub(" ", text) + "\n\n").encode("utf-8")
