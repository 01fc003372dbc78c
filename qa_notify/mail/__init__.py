"""Email for people who are away: presence-aware notification emails and the daily digest.

The path, one way through like the live one::

    beat: scan_email every EMAIL_SCAN_SECONDS      scan.due_away / scan.due_retries (keyset chunks)
          send_digests every 15 min (local hour)   scan.due_digests (users whose EMAIL_DIGEST_HOUR came)
          track_quiet_periods every QUIET_SCAN_SECONDS  summary.track_quiet_periods (periods begun/ended)
        │  one task per chunk of users              workers.email_users
        ▼
    scan.email_away / scan.email_digest             which notifications, presence (quota.presence)
        │  sending.reserve: EmailMessage "sending" + email_id on every notification it covers
        ▼  content.build_message (templates/mail/), sending.hand_over (Flask-Mailman), mark_sent

The rules (the README's "Email for people who are away" says the same):

- A notification was seen when the user had a stream open at or after its ``created_at``:
  they hold a live stream lease now, or their last-seen time (set by every lease claim,
  renewal and release) is not before it. Only unseen, unread notifications at least
  ``EMAIL_AWAY_SECONDS`` old are emailed; at most one away email per ``EMAIL_MIN_INTERVAL``.
- At most once: an email is recorded, with every notification it covers, in one committed
  transaction before it is handed to the mail server. A server that cannot be reached or
  refuses before taking the message undoes the record (the email is owed and retried with
  backoff). A record left ``sending`` (the worker died mid-send) is never sent again: it is
  marked ``abandoned`` after ``EMAIL_SENDING_GRACE_SECONDS``. An email can be lost that
  way, never doubled; the inbox keeps everything.
- Never while quiet (``qa_notify.quiet``): a quiet user is skipped; when the quiet period
  ends, one summary (``summary``) covers what arrived during it.
"""

import logging

from flask import Blueprint, Flask

log = logging.getLogger(__name__)
bp = Blueprint("mail", __name__)
FILE_BACKEND = "qa_notify.mail.eml"


def init_mail(app: Flask) -> None:
    """Bind Flask-Mailman: SMTP when ``MAIL_SERVER`` is set, else the ``.eml`` file writer.

    Malformed settings are logged here once and again whenever an email is due; they never
    stop the site or a worker from starting.
    """
    from ..extensions import mail
    from .sending import settings_problem

    port = str(app.config["MAIL_PORT"]).strip()
    if port.isascii() and port.isdigit():
        app.config["MAIL_PORT"] = int(port)
    app.config["MAIL_BACKEND"] = "smtp" if app.config.get("MAIL_SERVER") else FILE_BACKEND
    problem = settings_problem(app.config)
    if problem:
        log.error("%s: emails wait until it is fixed", problem)
    mail.init_app(app)


from . import confirm, unsubscribe  # noqa: E402,F401  (routes)
