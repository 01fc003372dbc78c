"""JSON from people and other services, parsed strictly: the API and the ingest stream share it.

Python's ``json`` accepts things no database or browser can take back: lone surrogate
escapes (``"\\ud800"``, not encodable as UTF-8), ``NaN`` and ``Infinity`` (not JSON at all
to ``JSON.parse``), and nesting deep enough to raise ``RecursionError`` instead of
``ValueError``. ``loads`` refuses all of them with one exception type, so a caller has one
thing to catch and nothing reaches storage that cannot be read back.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 32


class StrictJSONError(ValueError):
    """The text is not JSON this service accepts; the message says why, for the sender."""


def loads(raw: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``raw`` (UTF-8 bytes or text) or raise StrictJSONError saying what is wrong."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StrictJSONError(f"not valid UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise StrictJSONError(f"nested more than {max_depth} levels deep") from None
    except StrictJSONError:
        raise
    except ValueError as exc:
        raise StrictJSONError(f"not JSON: {exc}") from None
    check(value, max_depth)
    return value


def check(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """Raise StrictJSONError if ``value`` nests deeper than ``max_depth`` or holds a lone surrogate."""
    # Iterative, so a deep value cannot exhaust the stack here either.
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict | list):
            if depth >= max_depth:
                raise StrictJSONError(f"nested more than {max_depth} levels deep")
            children = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in children:
                if isinstance(key, str):
                    _check_text(key)
                stack.append((child, depth + 1))
        elif isinstance(item, float) and not math.isfinite(item):
            raise StrictJSONError("numbers must be finite (no NaN or Infinity)")


def dumps(value: Any) -> str:
    """Serialise ``value`` compactly as text that is valid UTF-8 and valid JSON, or raise."""
    check(value)
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StrictJSONError(f"cannot be sent as JSON: {exc}") from None


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise StrictJSONError("text must be valid Unicode (no lone surrogate escapes such as \\ud800)") from None


def _refuse_constant(name: str) -> None:
    raise StrictJSONError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise StrictJSONError(f"number {text[:20]} is out of range")
    return number
