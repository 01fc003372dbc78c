"""How one inbox item reads, in one place: the inbox page, its JSON, emails, pushes and toasts.

An item is a group of notifications (see ``inbox.Group``): "bob and 4 others answered 'How
do SSE retries work?'". The words are here once, in the reader's language (Flask-Babel's
catalogs); the page gets the same words (``page_words``, in ``<body data-words>``) and
fills them in as ``describe`` does, so a toast reads like its inbox item. Text only:
callers escape it (Jinja autoescape, ``textContent``).
"""

from __future__ import annotations

from dataclasses import dataclass

from flask_babel import get_translations, gettext, ngettext

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
        return gettext("Someone")
    total = max(actor_count, len(actors))
    if total == 1:
        return actors[0]
    if total == 2 and len(actors) == 2:
        return gettext("%(first)s and %(second)s", first=actors[0], second=actors[1])
    return ngettext("%(first)s and %(num)d other", "%(first)s and %(num)d others", total - 1, first=actors[0])


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
        title = _text(p.get("question_title"))
        detail = ngettext("%(num)d new answer", "%(num)d new answers", count) if count > 1 else _text(p.get("excerpt"))
        return Wording(gettext("%(people)s answered “%(title)s”", people=people, title=title), detail, url)
    if event_type == "mention":
        title = _text(p.get("question_title"))
        detail = ngettext("%(num)d mention", "%(num)d mentions", count) if count > 1 else _text(p.get("excerpt"))
        return Wording(gettext("%(people)s mentioned you in “%(title)s”", people=people, title=title), detail, url)
    if event_type == "new_question":
        topics = [t for t in p.get("topics") or [] if isinstance(t, str)] if isinstance(p.get("topics"), list) else []
        where = gettext("in %(topics)s", topics=gettext(", ").join(topics)) if topics else ""
        return Wording(gettext("%(people)s asked “%(title)s”", people=people, title=_text(p.get("title"))), where, url)
    if event_type == "broadcast":
        author = _text(p.get("author"))
        headline = gettext("Announcement from %(author)s", author=author) if author else gettext("Announcement")
        return Wording(headline, _text(p.get("message")), url)
    # Another service's type: its name and whatever text it gave.
    text = _text(p.get("text")) or _text(p.get("title")) or _text(p.get("message"))
    detail = ngettext("%(num)d event", "%(num)d events", count) if count > 1 else ""
    return Wording(gettext("%(type)s: %(text)s", type=event_type, text=text) if text else event_type, detail, url)


def via(source: str) -> str:
    """Return "(via deploy-bot)": an event another service sent says so."""
    return gettext("(via %(source)s)", source=source)


def _plural(singular: str, plural: str) -> dict[str, str]:
    """The two forms of a message for the page (``Intl.PluralRules`` picks "one" or "other")."""
    translations = get_translations()  # unfilled: ngettext would fill in the placeholders
    return {"one": translations.ungettext(singular, plural, 1), "other": translations.ungettext(singular, plural, 2)}


def page_words() -> dict:
    """Return the words ``describe`` uses, unfilled, in the reader's language, for the page.

    The page fills ``%(name)s`` / ``%(num)d`` itself, exactly as ``describe`` does, so a toast
    and a desktop notification read like the inbox item they belong to.
    """
    return {
        "someone": gettext("Someone"),
        "two": gettext("%(first)s and %(second)s"),
        "others": _plural("%(first)s and %(num)d other", "%(first)s and %(num)d others"),
        "answered": gettext("%(people)s answered “%(title)s”"),
        "answers": _plural("%(num)d new answer", "%(num)d new answers"),
        "mentioned": gettext("%(people)s mentioned you in “%(title)s”"),
        "mentions": _plural("%(num)d mention", "%(num)d mentions"),
        "asked": gettext("%(people)s asked “%(title)s”"),
        "in_topics": gettext("in %(topics)s"),
        "list_separator": gettext(", "),
        "announcement_from": gettext("Announcement from %(author)s"),
        "announcement": gettext("Announcement"),
        "typed": gettext("%(type)s: %(text)s"),
        "events": _plural("%(num)d event", "%(num)d events"),
        "via": gettext("(via %(source)s)"),
        # The rest of what the page's script says itself.
        "dismiss": gettext("Dismiss"),
        "status": {
            "live": gettext("live"),
            "reconnecting": gettext("reconnecting"),
            "offline": gettext("offline"),
            "signed-out": gettext("signed out"),
        },
        "desktop": {
            "unsupported": gettext("This browser cannot show desktop notifications."),
            "denied": gettext(
                "This browser blocks notifications from this site. Allow them in the site settings "
                "(the icon left of the address), then turn them on here."
            ),
            "off": gettext("Off in this browser."),
            "on": gettext("On in this browser."),
        },
    }
