"""An address gets notification emails only once its owner confirmed it from that mailbox.

Without this, anyone could type a stranger's address into their preferences and have the
site email them. A new or changed address is unconfirmed; the site sends one email to it
with a signed link (valid ``EMAIL_CONFIRM_MAX_AGE``, bound to the user and the address).
``GET`` on the link shows a button and changes nothing (mail scanners fetch links);
``POST`` confirms. Saving the same unconfirmed address again sends a fresh link.
"""

from __future__ import annotations

import logging

from flask import current_app, render_template, url_for
from flask_babel import force_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_mailman import EmailMultiAlternatives
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import update

from ..extensions import csrf, db
from ..i18n import locale_of
from ..jobs import jobs
from ..models import User, utcnow, valid_id
from . import bp
from .sending import NotHandedOver, Unknown, hand_over

log = logging.getLogger(__name__)
SALT = "qa-notify-email-confirm"
MAX_TOKEN_LENGTH = 600
INVALID = _l("This confirmation link is not valid. Save your address on the preferences page to get a new one.")


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=SALT)


def confirm_token(user_id: int, address: str) -> str:
    """Return a token that confirms ``address`` for ``user_id`` (and nothing else)."""
    return _serializer().dumps({"u": user_id, "e": address})


def read_token(token: str) -> tuple[int, str]:
    """Return (user id, address) of a token; raise ValueError with a message for the page."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise ValueError(str(INVALID))
    try:
        data = _serializer().loads(token, max_age=current_app.config["EMAIL_CONFIRM_MAX_AGE"])
    except SignatureExpired:
        raise ValueError(_("This confirmation link has expired. Save your address again to get a new one.")) from None
    except BadSignature:
        raise ValueError(str(INVALID)) from None
    if not isinstance(data, dict) or not valid_id(data.get("u")) or not isinstance(data.get("e"), str):
        raise ValueError(str(INVALID))
    return data["u"], data["e"]


def request_confirmation(user_id: int) -> None:
    """Have a worker email the confirmation link (a broker that is away is logged: save again later)."""
    try:
        jobs().confirm_email(user_id)
    except Exception:  # the broker being away must never fail the user's request
        log.warning("could not queue the confirmation email of user %s", user_id, exc_info=True)


def send_confirmation(user_id: int) -> str:
    """Email the user's unconfirmed address its confirmation link; return what happened."""
    user = db.session.get(User, user_id)
    if user is None or not user.email or user.email_verified_at is not None:
        return "nothing"
    with (
        current_app.test_request_context("/", base_url=current_app.config["SITE_URL"]),
        force_locale(locale_of(user)),
    ):
        link = url_for("mail.confirm_page", token=confirm_token(user.id, user.email), _external=True)
        context = {"user": user, "link": link}
        message = EmailMultiAlternatives(
            subject=_("Confirm your email address for qa_notify"),
            body=render_template("mail/confirm.txt", **context),
            from_email=current_app.config["MAIL_DEFAULT_SENDER"],
            to=[user.email],
            headers={"Auto-Submitted": "auto-generated"},
        )
        message.attach_alternative(render_template("mail/confirm.html", **context), "text/html")
    try:
        hand_over(message)
    except (NotHandedOver, Unknown) as exc:
        log.warning("confirmation email to user %s not sent: %s (saving the address again retries)", user_id, exc)
        return "failed"
    return "sent"


def _page(state: str, token: str, user: User | None = None, message: str = "", status: int = 200):
    return render_template("mail/confirm_page.html", state=state, token=token, user=user, message=message), status


def _check(token: str) -> tuple[User | None, str]:
    try:
        user_id, address = read_token(token)
    except ValueError as exc:
        return None, str(exc)
    user = db.session.get(User, user_id)
    if user is None or user.email != address:
        return None, "This link was for an address that is no longer on the account."
    return user, ""


@bp.get("/email/confirm/<token>")
def confirm_page(token: str):
    """Show the address to confirm and a button; a GET changes nothing."""
    user, problem = _check(token)
    if user is None:
        return _page("invalid", token, message=problem, status=400)
    return _page("done" if user.email_verified_at else "confirm", token, user)


# Exempt from CSRF on purpose: the link is opened from the mailbox, often in a browser that
# is not signed in. The signed token (this user, this address, not expired) is the
# authentication, and all it can do is confirm that address.
@csrf.exempt
@bp.post("/email/confirm/<token>")
def confirm(token: str):
    """Confirm the token's address for its user."""
    user, problem = _check(token)
    if user is None:
        return _page("invalid", token, message=problem, status=400)
    db.session.execute(
        update(User).where(User.id == user.id, User.email == user.email).values(email_verified_at=utcnow())
    )
    db.session.commit()
    return _page("done", token, db.session.get(User, user.id))
