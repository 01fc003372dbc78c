"""How one inbox item reads, in one place: the inbox page, its JSON and the emails say the same.

An item is a group of notifications (see ``inbox.Group``): "bob and 4 others answered 'How
do SSE retries work?'". Text only: callers escape it (Jinja autoescape, ``textContent``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..urls import site_path


@dataclass(frozen=True)
class Wording:
    """An item's headline, its optional detail line and the site path it links to."""

    headline: str
    detail: str
    url: str | None


def who(actors: list[str], actor_count: int) -> str:
    """Return "bob", "bob and alice" or "bob and 4 others" (the newest actor first)."""
    if not actors:
        return "Someone"
    total = max(actor_count, len(actors))
    if total == 1:
        return actors[0]
    if total == 2 and len(actors) == 2:
        return f"{actors[0]} and {actors[1]}"
    others = total - 1
    return f"{actors[0]} and {others} other{'s' if others > 1 else ''}"


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def describe(
    event_type: str, payload: dict, count: int = 1, actors: list[str] | None = None, actor_count: int = 0
) -> Wording:
    """Return the wording of an item of ``count`` events of ``event_type``, newest ``payload``."""
    p = payload if isinstance(payload, dict) else {}
    people = who(actors if actors is not None else [a for a in [_text(p.get("author"))] if a], actor_count)
    url = site_path(p.get("url"))
    if event_type == "new_answers":
        detail = f"{count} new answers" if count > 1 else _text(p.get("excerpt"))
        return Wording(f"{people} answered \u201c{_text(p.get('question_title'))}\u201d", detail, url)
    if event_type == "mention":
        detail = f"{count} mentions" if count > 1 else _text(p.get("excerpt"))
        return Wording(f"{people} mentioned you in \u201c{_text(p.get('question_title'))}\u201d", detail, url)
    if event_type == "new_question":
        topics = p.get("topics")
        where = (
            "in " + ", ".join(t for t in topics if isinstance(t, str)) if isinstance(topics, list) and topics else ""
        )
        return Wording(f"{people} asked \u201c{_text(p.get('title'))}\u201d", where, url)
    if event_type == "broadcast":
        author = _text(p.get("author"))
        return Wording(f"Announcement from {author}" if author else "Announcement", _text(p.get("message")), url)
    # Another service's type: its name and whatever text it gave.
    text = _text(p.get("text")) or _text(p.get("title")) or _text(p.get("message"))
    detail = f"{count} events" if count > 1 else ""
    return Wording(f"{event_type}: {text}" if text else event_type, detail, url)
