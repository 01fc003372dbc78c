"""One-click unsubscribe: a signed, expiring link in every email that needs no login.

``GET`` shows a page with a button and changes nothing (mail scanners and link previews
fetch links); ``POST`` (the button, or the mail provider's RFC 8058 one-click request)
turns the user's email off.
"""

from __future__ import annotations

from flask import current_app, render_template
from flask_babel import gettext as _
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import update

from ..extensions import csrf, db
from ..models import User, valid_id
from . import bp

SALT = "qa-notify-email-unsubscribe"
MAX_TOKEN_LENGTH = 200


class BadToken(Exception):
    """An unsubscribe token that is tampered with, truncated or expired; the message says which."""


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=SALT)


def unsubscribe_token(user_id: int) -> str:
    """Return a token that turns ``user_id``'s email off, valid for ``EMAIL_UNSUBSCRIBE_MAX_AGE``."""
    return _serializer().dumps({"u": user_id})


def user_for_token(token: str) -> int:
    """Return the user id a token was made for; raise BadToken if it is not one of ours or expired."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise BadToken(_("This unsubscribe link is not valid. Use the link from your most recent email."))
    try:
        data = _serializer().loads(token, max_age=current_app.config["EMAIL_UNSUBSCRIBE_MAX_AGE"])
    except SignatureExpired:
        raise BadToken(
            _(
                "This unsubscribe link has expired. Use the link in a more recent email, or log in and "
                "turn email off on your preferences page."
            )
        ) from None
    except BadSignature:
        raise BadToken(_("This unsubscribe link is not valid. Use the link from your most recent email.")) from None
    user_id = data.get("u") if isinstance(data, dict) else None
    if not valid_id(user_id):
        raise BadToken(_("This unsubscribe link is not valid. Use the link from your most recent email."))
    return user_id


def _page(state: str, token: str, user: User | None = None, message: str = "", status: int = 200):
    return render_template("mail/unsubscribe.html", state=state, token=token, user=user, message=message), status


@bp.get("/email/unsubscribe/<token>")
def unsubscribe_page(token: str):
    """Ask for confirmation; a GET never changes anything (scanners prefetch links)."""
    try:
        user = db.session.get(User, user_for_token(token))
    except BadToken as exc:
        return _page("invalid", token, message=str(exc), status=400)
    if user is None:
        return _page("invalid", token, message=_("This account no longer exists."), status=400)
    return _page("confirm", token, user)


# Exempt from CSRF on purpose: mail providers send the one-click POST (RFC 8058) with no
# session and no CSRF token. The signed, expiring token in the URL is the authentication,
# and all it can do is turn one user's email off.
@csrf.exempt
@bp.post("/email/unsubscribe/<token>")
def unsubscribe(token: str):
    """Turn the token's user's notification email off."""
    try:
        user_id = user_for_token(token)
    except BadToken as exc:
        return _page("invalid", token, message=str(exc), status=400)
    db.session.execute(update(User).where(User.id == user_id).values(email_mode="off"))
    db.session.commit()
    user = db.session.get(User, user_id)
    if user is None:
        return _page("invalid", token, message=_("This account no longer exists."), status=400)
    return _page("done", token, user)
