"""Account rules shared by the pages and the JSON API."""

from __future__ import annotations

import functools
import logging
import re
import secrets

import redis
from flask import current_app, session
from flask_babel import gettext as _
from flask_login import login_user, logout_user
from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash

from ..errors import SiteError
from ..events import bus
from ..extensions import db, login_manager
from ..i18n import browser_locale
from ..mail.preferences import normalise_address
from ..models import ROLES, User

log = logging.getLogger(__name__)

USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{3,40}\Z")
MIN_PASSWORD = 8
MAX_PASSWORD = 200


class AccountError(SiteError):
    """A registration or login problem the user can fix; ``status`` is the HTTP status."""


@login_manager.user_loader
def load_user(identity: str) -> User | None:
    """Return the user of a session, or None if the session was invalidated since."""
    user_id, _, version = identity.partition(":")
    if not user_id.isdigit() or not version.isdigit():
        return None
    # Redis first: a request waiting for Redis must not hold a database connection meanwhile.
    sid = session.get("sid")
    if sid is None or _session_revoked(sid):
        return None
    user = db.session.get(User, int(user_id))
    if user is None or user.session_version != int(version):
        return None
    return user


def _revoked_key(sid: str) -> str:
    return f"qa:session:revoked:{sid}"


def _session_revoked(sid: str) -> bool:
    """True if this browser session was logged out; fails open (logged) while Redis is away."""
    r = bus.redis_client_or_none()
    if r is None:
        return False
    try:
        return bool(r.exists(_revoked_key(sid)))
    except redis.RedisError:
        log.warning("could not check session revocation: Redis unavailable")
        return False


def _revoke_session(sid: str) -> None:
    """Refuse this session id from now on, for as long as any cookie carrying it could be valid."""
    r = bus.redis_client_or_none()
    if r is None:
        return
    # Flask refuses any session cookie older than PERMANENT_SESSION_LIFETIME, so no longer.
    ttl = int(current_app.permanent_session_lifetime.total_seconds())
    try:
        r.set(_revoked_key(sid), 1, ex=ttl)
    except redis.RedisError:
        log.warning("could not record a logout: Redis unavailable; the old cookie stays valid until it expires")


def validate_credentials(username: str, password: str) -> None:
    """Raise AccountError unless the username and password are acceptable for a new account."""
    if not USERNAME_PATTERN.match(username):
        raise AccountError(_("username must be 3-40 letters, digits, '_', '.' or '-'"))
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AccountError(_("password must be %(low)d-%(high)d characters", low=MIN_PASSWORD, high=MAX_PASSWORD))


def register_user(username: str, password: str, role: str = "user", email: str | None = None) -> User:
    """Create an account (with an optional email address); raise AccountError (409) if the name is taken."""
    validate_credentials(username, password)
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    try:
        address = normalise_address(email or "")
    except ValueError as exc:
        raise AccountError(str(exc)) from None
    if db.session.scalar(select(User.id).where(User.username == username)) is not None:
        raise AccountError(_("username is taken"), status=409)
    user = User(username=username, role=role, email=address)
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    if address:
        from ..mail.confirm import request_confirmation

        request_confirmation(user.id)
    return user


@functools.cache
def _dummy_hash() -> str:
    """A hash made the way real ones are, to check against when the user does not exist."""
    return generate_password_hash(secrets.token_urlsafe(16))


def authenticate(username: str, password: str) -> User | None:
    """Return the user whose credentials these are, or None.

    A missing user costs the same hash check as a wrong password, so the answer's timing
    does not tell which usernames exist.
    """
    user = None if "\x00" in username else db.session.scalar(select(User).where(User.username == username))
    if user is None:
        check_password_hash(_dummy_hash(), password[:MAX_PASSWORD])
        return None
    return user if user.check_password(password[:MAX_PASSWORD]) else None


def start_session(user: User, remember: bool = False) -> None:
    """Log ``user`` in on a fresh session (no fixation: the old session's data is dropped).

    "Keep me signed in" makes the session cookie last PERMANENT_SESSION_LIFETIME instead of
    using Flask-Login's remember cookie, whose value is the same on every device of a user
    and so could not be revoked for one browser at logout.
    """
    session.clear()
    login_user(user)
    session.permanent = remember
    session["sid"] = secrets.token_urlsafe(16)
    remember_browser_language(user)


def remember_browser_language(user: User) -> None:
    """Save the language this browser asks for, to write to the user in it when they are away."""
    language = browser_locale()
    if language and language != user.browser_locale:
        user.browser_locale = language
        db.session.commit()


def end_session(user: User) -> None:
    """Log out this browser: its cookies stop working, even if copied, and its streams close."""
    sid = session.get("sid")
    if sid:
        _revoke_session(sid)
    logout_user()
    session.clear()
    r = bus.redis_client_or_none()
    if r is not None:
        bus.close_user_streams(r, user.id, reason="logout", session_id=sid)


def invalidate_sessions(user: User, reason: str) -> None:
    """Sign ``user`` out everywhere (password or role change) and close all their streams."""
    user.session_version += 1
    db.session.commit()
    r = bus.redis_client_or_none()
    if r is not None:
        bus.close_user_streams(r, user.id, reason=reason)


@login_manager.unauthorized_handler
def unauthorized():
    """API and stream clients get 401 JSON; browsers are sent to the login page."""
    from flask import redirect, request, url_for

    from ..errors import error_response, wants_json

    if wants_json():
        return error_response(401, "login required")
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
