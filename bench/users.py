"""Make many users fast (one password hash for all) and sign session cookies for them."""

from __future__ import annotations

from sqlalchemy import insert, select

from qa_notify.extensions import db
from qa_notify.models import Question, QuestionFollow, User

PASSWORD = "bench-pass-1"


def create_users(app, count: int, prefix: str = "u") -> list[int]:
    """Insert ``count`` users; return their ids."""
    with app.app_context():
        probe = User(username="probe")
        probe.set_password(PASSWORD)
        rows = [
            {"username": f"{prefix}{i}", "password_hash": probe.password_hash, "role": "user"} for i in range(count)
        ]
        for start in range(0, count, 5000):
            db.session.execute(insert(User), rows[start : start + 5000])
        db.session.commit()
        return list(db.session.scalars(select(User.id).where(User.username.like(f"{prefix}%")).order_by(User.id)))


def create_admin(app, username: str = "bench-admin") -> int:
    with app.app_context():
        user = User(username=username, role="admin")
        user.set_password(PASSWORD)
        db.session.add(user)
        db.session.commit()
        return user.id


def follow_question(app, user_ids: list[int], question_id: int) -> None:
    with app.app_context():
        rows = [{"user_id": uid, "question_id": question_id} for uid in user_ids]
        for start in range(0, len(rows), 5000):
            db.session.execute(insert(QuestionFollow), rows[start : start + 5000])
        db.session.commit()


def ask_as(app, author_id: int, title: str) -> int:
    """Create a question row directly (no event: the benchmark measures answers)."""
    with app.app_context():
        q = Question(title=title, body="", author_id=author_id)
        db.session.add(q)
        db.session.commit()
        return q.id


def session_cookies(app, user_ids: list[int]) -> dict[int, str]:
    """Return a signed Flask session cookie per user, as a login from the load generator
    (127.0.0.1, no User-Agent) would have stored it, ``_id`` included: without it
    Flask-Login would rewrite the session, and send a new cookie, on every stream."""
    from flask_login.utils import _create_identifier

    serializer = app.session_interface.get_signing_serializer(app)
    with app.test_request_context(environ_base={"REMOTE_ADDR": "127.0.0.1"}):
        identifier = _create_identifier()
    return {
        uid: serializer.dumps({"_user_id": f"{uid}:1", "_fresh": True, "_id": identifier, "sid": f"bench-{uid}"})
        for uid in user_ids
    }
