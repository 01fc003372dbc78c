"""``@username`` in a question or an answer: who is mentioned, and who of them hears of it.

A name counts when it belongs to a member (anything else stays plain text), is not the
writer, and is among the first ``MAX_MENTIONS`` distinct names of the post: a post naming
more does not notify the rest, so a wall of names cannot spam the site.
"""

from __future__ import annotations

import re

from markupsafe import Markup, escape
from sqlalchemy import select

from ..extensions import db
from ..models import MutedType, User

MAX_MENTIONS = 20
# The name characters of USERNAME_PATTERN; not preceded by a name character or "@"
# (e-mail addresses such as bob@example.com are not mentions).
MENTION_PATTERN = re.compile(r"(?<![A-Za-z0-9_.@-])@([A-Za-z0-9_.-]{3,40})")


def mentioned_names(text: str) -> list[str]:
    """Return the distinct ``@names`` in ``text`` in order of appearance, at most MAX_MENTIONS.

    A name followed by sentence punctuation ("thanks @bob.") is also tried without it.
    """
    names: list[str] = []
    for match in MENTION_PATTERN.finditer(text):
        name = match.group(1)
        if name not in names:
            names.append(name)
            if len(names) == MAX_MENTIONS:
                break
    return names


def mentioned_users(text: str, writer_id: int) -> list[User]:
    """Return the members ``text`` mentions (never the writer), in order of first mention."""
    names = mentioned_names(text)
    if not names:
        return []
    # "@bob." may be bob or "bob." (both are valid names): look up both, prefer the exact one.
    lookups = set(names) | {n.rstrip(".-") for n in names if len(n.rstrip(".-")) >= 3}
    found = {u.username: u for u in db.session.scalars(select(User).where(User.username.in_(lookups)))}
    users: list[User] = []
    for name in names:
        user = found.get(name) or found.get(name.rstrip(".-"))
        if user is not None and user.id != writer_id and user not in users:
            users.append(user)
    return users


def unmuted(user_ids: list[int], event_type: str) -> list[int]:
    """Return those of ``user_ids`` who did not mute ``event_type``."""
    if not user_ids:
        return []
    muted = set(
        db.session.scalars(
            select(MutedType.user_id).where(MutedType.event_type == event_type, MutedType.user_id.in_(user_ids))
        )
    )
    return [uid for uid in user_ids if uid not in muted]


def members_named(texts: list[str]) -> dict[str, int]:
    """Return {username: id} for the members the ``texts`` mention (one query for a page)."""
    names = {name for text in texts for name in mentioned_names(text)}
    names |= {n.rstrip(".-") for n in names if len(n.rstrip(".-")) >= 3}
    if not names:
        return {}
    rows = db.session.execute(select(User.username, User.id).where(User.username.in_(names)))
    return {name: uid for name, uid in rows}


def link_mentions(text: str, members: dict[str, int]) -> Markup:
    """Return ``text`` escaped, with each ``@name`` of a member linked to their page."""
    out: list[str] = []
    last = 0
    for match in MENTION_PATTERN.finditer(text):
        name = match.group(1)
        trail = ""
        if name not in members and name.rstrip(".-") in members:
            name, trail = name.rstrip(".-"), name[len(name.rstrip(".-")) :]
        if name not in members:
            continue
        out.append(escape(text[last : match.start()]))
        out.append(Markup('<a class="mention" href="/users/{}">@{}</a>').format(members[name], name))
        out.append(escape(trail))
        last = match.end()
    out.append(escape(text[last:]))
    return Markup("").join(out)
