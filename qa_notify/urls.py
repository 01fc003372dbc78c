"""The site's URL rules: ``<id:question_id>`` matches only ids a row can have, and which paths are ours."""

from __future__ import annotations

from werkzeug.routing import BaseConverter

from .models import MAX_ID


class IdConverter(BaseConverter):
    """An ASCII-digit row id within the database's range; anything else is a 404 at routing."""

    regex = r"[0-9]{1,10}"

    def to_python(self, value: str) -> int:
        """Return the id, or refuse the match (404) when it is out of range."""
        from werkzeug.routing import ValidationError

        number = int(value)
        if not 0 < number <= MAX_ID:
            raise ValidationError()
        return number

    def to_url(self, value: int) -> str:
        """Return the id as digits."""
        return str(int(value))


def site_path(url: object) -> str | None:
    """Return ``url`` if it is a path on this site, else None: the one open-redirect check.

    Used for ``?next=`` after login and for the links in notification payloads (which may
    come from other services); ``//host`` and backslashes would leave the site.
    """
    if isinstance(url, str) and url.startswith("/") and not url.startswith("//") and "\\" not in url:
        return url
    return None
