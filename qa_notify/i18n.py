"""Which language a reader gets: the languages the site speaks and how one is chosen.

Pages, toasts, desktop and push notifications, emails and the errors people read come in
the reader's language: their preference (``User.locale``), else the browser's
``Accept-Language`` (any Chinese, ``zh``, ``zh-TW``, reads the simplified catalog, the one
we have), else English. Work done for a user away from any request (an email, a push) uses
``locale_of(user)``: their preference, else the language their browser asked for when they
last signed in (saved then, see ``remember_browser_language``).
"""

from __future__ import annotations

from flask import has_request_context, request
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from flask_login import current_user

DEFAULT_LOCALE = "en"
# The catalogs under qa_notify/translations (English is the source text). Babel names the
# zh_CN one by its script too: translations/zh_Hans_CN (Chinese, simplified, China).
LANGUAGES = {"en": "English", "zh_CN": "简体中文"}
# How a role reads on a page.
ROLE_NAMES = {"user": _l("Member"), "moderator": _l("Moderator"), "admin": _l("Admin")}
# How the site's own event types read in a list (the inbox's type filter); others keep their name.
TYPE_NAMES = {
    "new_answers": _l("New answers"),
    "new_question": _l("New questions"),
    "mention": _l("Mentions"),
    "broadcast": _l("Announcements"),
}


def browser_locale() -> str | None:
    """Return the request's best language of ours by ``Accept-Language``, or None."""
    best = request.accept_languages.best_match(["en", "zh_CN", "zh"])
    return "zh_CN" if best == "zh" else best


def select_locale() -> str:
    """Return the language this request is answered in (Flask-Babel's locale selector)."""
    if not has_request_context():
        return DEFAULT_LOCALE
    if current_user and current_user.is_authenticated and current_user.locale in LANGUAGES:
        return current_user.locale
    return browser_locale() or DEFAULT_LOCALE


def role_name(role: str) -> str:
    """Return a role as a page shows it, in the reader's language."""
    return str(ROLE_NAMES.get(role, role))


def type_name(event_type: str) -> str:
    """Return an event type as a list shows it, in the reader's language."""
    return str(TYPE_NAMES.get(event_type, event_type))


def page_lang() -> str:
    """Return the ``<html lang>`` of what is being rendered (a page, or an email in its reader's
    language): ``en`` or ``zh-CN``."""
    locale = get_locale()
    if locale is None:
        return DEFAULT_LOCALE
    return f"{locale.language}-{locale.territory}" if locale.territory else locale.language


def check_locale(value: object) -> str | None:
    """Return a language a user may choose (None: follow the browser); raise ValueError if not one."""
    if value is None or value in LANGUAGES:
        return value
    raise ValueError(f"'locale' must be one of {', '.join(LANGUAGES)}, or null to follow the browser")


def locale_of(user) -> str:
    """Return the language to write to ``user`` in when no request is asking (emails, pushes)."""
    chosen = getattr(user, "locale", None) or getattr(user, "browser_locale", None)
    return chosen if chosen in LANGUAGES else DEFAULT_LOCALE
