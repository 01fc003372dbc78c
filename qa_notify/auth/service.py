"""Account rules shared by the pages and the JSON API."""

from __future__ import annotations

import re
import secrets

from flask import session
from flask_login import login_user, logout_user
from sqlalchemy import select

from ..events import bus
from ..extensions import db, login_manager
from ..models import ROLES, User

USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{3,40}\Z")
MIN_PASSWORD = 8
MAX_PASSWORD = 200


class AccountError(ValueError):
    """A registration or login problem the user can fix; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@login_manager.user_loader
def load_user(identity: str) -> User | None:
    """Return the user of a session, or None if the session was invalidated since."""
    user_id, _, version = identity.partition(":")
    if not user_id.isdigit() or not version.isdigit():
        return None
    user = db.session.get(User, int(user_id))
    if user is None or user.session_version != int(version):
        return None
    return user


def validate_credentials(username: str, password: str) -> None:
    """Raise AccountError unless the username and password are acceptable for a new account."""
    if not USERNAME_PATTERN.match(username):
        raise AccountError("username must be 3-40 letters, digits, '_', '.' or '-'")
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AccountError(f"password must be {MIN_PASSWORD}-{MAX_PASSWORD} characters")


def register_user(username: str, password: str, role: str = "user") -> User:
    """Create an account; raise AccountError (409) if the name is taken."""
    validate_credentials(username, password)
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    if db.session.scalar(select(User.id).where(User.username == username)) is not None:
        raise AccountError("username is taken", status=409)
    user = User(username=username, role=role)
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    return user


def authenticate(username: str, password: str) -> User | None:
    """Return the user whose credentials these are, or None."""
    if "\x00" in username:
        return None
    user = db.session.scalar(select(User).where(User.username == username))
    if user is None or not user.check_password(password[:MAX_PASSWORD]):
        return None
    return user


def start_session(user: User, remember: bool = False) -> None:
    """Log ``user`` in on a fresh session (no fixation: the old session's data is dropped)."""
    session.clear()
    login_user(user, remember=remember)
    session["sid"] = secrets.token_urlsafe(16)


def end_session(user: User) -> None:
    """Log out this browser and close its open notification streams."""
    sid = session.get("sid")
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

    from ..errors import wants_json
    from ..jsonapi import error_response

    if wants_json():
        return error_response(401, "login required")
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
