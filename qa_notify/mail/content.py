"""What an email says: the notifications it covers, grouped as in the inbox, in HTML and text.

An email lists at most ``MAX_GROUPS`` groups, newest first ("bob and 4 others answered
'How do SSE retries work?'"), then "and N more" with a link to the inbox, however many
notifications it covers: a digest of 10,000 is one grouped query and 50 lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import current_app, render_template, url_for
from flask_babel import force_locale, ngettext
from flask_mailman import EmailMultiAlternatives
from sqlalchemy import func, select

from ..extensions import db
from ..i18n import locale_of
from ..models import Notification, OutboxEvent, User
from ..notifications import wording
from ..notifications.inbox import GROUP
from .unsubscribe import unsubscribe_token

MAX_GROUPS = 50
SUBJECT_LENGTH = 120


@dataclass(frozen=True)
class Line:
    """One group's line: what happened, an optional detail, and an absolute link."""

    headline: str
    detail: str
    url: str
    count: int


@dataclass(frozen=True)
class Summary:
    """The lines of one email, and how many groups and notifications it covers in all."""

    lines: list[Line]
    groups: int
    notifications: int

    @property
    def more(self) -> int:
        """Groups not listed (past MAX_GROUPS)."""
        return self.groups - len(self.lines)


def group_line(event_type: str, payload: dict, count: int, actors: list[str], actor_count: int) -> Line:
    """Return the line for a group of ``count`` notifications whose newest has ``payload``.

    The one place an email words a notification: it says what the inbox says
    (``notifications.wording``), with links made absolute (``SITE_URL``).
    """
    said = wording.describe(event_type, payload, count, actors, actor_count)
    url = absolute_url(said.url) if said.url else url_for("notifications.inbox_page", _external=True)
    return Line(said.headline, said.detail, url, count)


def absolute_url(path: str) -> str:
    """Return a site path (as ``url_for`` made it, prefix included) as a link for a mail client."""
    parts = urlsplit(current_app.config["SITE_URL"])
    return f"{parts.scheme}://{parts.netloc}{path}"


def summarize(email_id: int) -> Summary:
    """Group the notifications email ``email_id`` covers, newest group first, at most MAX_GROUPS."""
    latest = func.max(Notification.id)
    covered = (Notification.email_id == email_id,)
    rows = db.session.execute(
        select(
            latest.label("latest"),
            func.count().label("parts"),
            func.count(func.distinct(OutboxEvent.actor_id)).label("actors"),
        )
        .join(OutboxEvent, Notification.outbox_id == OutboxEvent.id)
        .where(*covered)
        .group_by(GROUP)
        .order_by(latest.desc())
        .limit(MAX_GROUPS)
    ).all()
    newest = {
        n.id: n for n in db.session.scalars(select(Notification).where(Notification.id.in_([r.latest for r in rows])))
    }
    lines = []
    for row in rows:
        part = newest[row.latest]
        author = part.payload.get("author") if isinstance(part.payload, dict) else None
        actors = [author] if isinstance(author, str) and author else []
        lines.append(group_line(part.event_type, part.payload, row.parts, actors, row.actors))
    groups = db.session.scalar(
        select(func.count(func.distinct(GROUP)))
        .select_from(Notification)
        .join(OutboxEvent, Notification.outbox_id == OutboxEvent.id)
        .where(*covered)
    )
    notifications = db.session.scalar(select(func.count()).select_from(Notification).where(*covered))
    return Summary(lines, int(groups or 0), int(notifications or 0))


def subject_for(kind: str, summary: Summary) -> str:
    """Return the subject line: the one group's headline, or how many updates there are."""
    if kind == "digest":
        subject = ngettext("Your daily digest: %(num)d update", "Your daily digest: %(num)d updates", summary.groups)
    elif summary.groups == 1 and summary.lines:
        subject = summary.lines[0].headline
    else:
        subject = ngettext("%(num)d update while you were away", "%(num)d updates while you were away", summary.groups)
    subject = " ".join(subject.split())  # no line breaks from user text in a header
    return subject if len(subject) <= SUBJECT_LENGTH else subject[: SUBJECT_LENGTH - 1] + "\u2026"


def build_message(user: User, kind: str, email_id: int) -> EmailMultiAlternatives:
    """Return the email ``email_id`` to ``user`` as a message with text and HTML parts, in their language."""
    with (
        current_app.test_request_context("/", base_url=current_app.config["SITE_URL"]),
        force_locale(locale_of(user)),
    ):
        summary = summarize(email_id)
        unsubscribe_url = url_for("mail.unsubscribe_page", token=unsubscribe_token(user.id), _external=True)
        context = {
            "user": user,
            "kind": kind,
            "summary": summary,
            "inbox_url": url_for("notifications.inbox_page", _external=True),
            "preferences_url": url_for("preferences.preferences_page", _external=True),
            "unsubscribe_url": unsubscribe_url,
        }
        message = EmailMultiAlternatives(
            subject=subject_for(kind, summary),
            body=render_template("mail/notifications.txt", **context),
            from_email=current_app.config["MAIL_DEFAULT_SENDER"],
            to=[user.email],
            headers={
                "List-Unsubscribe": f"<{unsubscribe_url}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                "Auto-Submitted": "auto-generated",
                "X-QA-Notify-Email": str(email_id),
            },
        )
        message.attach_alternative(render_template("mail/notifications.html", **context), "text/html")
    return message
