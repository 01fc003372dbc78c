"""A user's email preferences: the address and when to email (off, when away, daily digest)."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from ..extensions import db
from ..models import EMAIL_MODES, User, utcnow
from .confirm import request_confirmation

MAX_ADDRESS = 254
MODE_LABELS = {
    "off": _l("Never"),
    "away": _l("When I'm away"),
    "digest": _l("A daily digest"),
}


def normalise_address(raw: str) -> str | None:
    """Return the address in its normal form, None for an empty one; raise ValueError if invalid.

    The syntax is checked, not the domain (no DNS look-up here): the mail server says the rest.
    """
    raw = raw.strip()
    if not raw:
        return None
    if len(raw) > MAX_ADDRESS:
        raise ValueError(_("An email address has at most %(num)d characters.", num=MAX_ADDRESS))
    try:
        return validate_email(raw, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(_("That is not an email address: %(reason)s", reason=exc)) from None


def email_preferences(user: User) -> dict:
    """Return the user's email settings as the API shows them."""
    return {
        "email": user.email,
        "email_verified": user.email_verified_at is not None,
        "email_mode": user.email_mode,
        "email_modes": list(EMAIL_MODES),
    }


def set_email_preferences(user_id: int, changes: dict) -> User:
    """Apply ``changes`` (``email``: an address, or None/"" to remove it; ``email_mode``) to the user.

    Raise ValueError for a bad address or mode, changing nothing. A new address or a switch
    to "away" starts from now: notifications from before are not emailed all at once. A new
    address is unconfirmed until its owner follows the link emailed to it (``mail.confirm``);
    saving an unconfirmed address again sends a fresh link.
    """
    user = db.session.get(User, user_id)
    mode = changes.get("email_mode", user.email_mode)
    if mode not in EMAIL_MODES:
        raise ValueError(f"email_mode must be one of {', '.join(EMAIL_MODES)}")
    address = normalise_address(changes.get("email") or "") if "email" in changes else user.email
    now = utcnow()
    if address != user.email:
        user.email = address
        user.email_verified_at = None
        user.email_failures = 0
        user.email_retry_at = None
        user.email_checked_until = now
    if mode != user.email_mode:
        user.email_mode = mode
        if mode == "away":
            user.email_checked_until = now
    db.session.commit()
    if "email" in changes and user.email and user.email_verified_at is None:
        request_confirmation(user.id)
    return user
