"""Broadcasts: an admin's announcement to everyone or to one role."""

from __future__ import annotations

from sqlalchemy import func, select

from ..auth.service import invalidate_sessions
from ..errors import SiteError
from ..events.audiences import Everyone
from ..events.outbox import emit
from ..events.types import BroadcastEvent
from ..extensions import db
from ..models import ROLES, Broadcast, Notification, User


class BroadcastError(SiteError):
    """A broadcast that cannot be sent (422); the message says why."""


class RoleError(SiteError):
    """A role change that is not allowed; ``status`` is the HTTP status to answer with."""


def change_role(actor: User, user: User, role: str) -> bool:
    """Give ``user`` the role ``role`` on ``actor``'s authority; return False if nothing changed.

    The one place the rules live, for the admin page and the API alike: only existing
    roles; nobody changes their own role (an admin demoting themselves could leave nobody
    able to undo it); the site always keeps an admin. The user's sessions and streams end,
    so the new role applies at once.
    """
    if role not in ROLES:
        raise RoleError(f"role must be one of {', '.join(ROLES)}")
    if user.id == actor.id:
        raise RoleError("you cannot change your own role; ask another admin", status=403)
    if user.role == role:
        return False
    if user.role == "admin" and _admin_count() <= 1:
        raise RoleError("the site must keep at least one admin", status=409)
    user.role = role
    invalidate_sessions(user, reason="role_changed")
    return True


def _admin_count() -> int:
    return db.session.scalar(select(func.count()).select_from(User).where(User.role == "admin")) or 0


def send_broadcast(author: User | None, message: str, role: str | None, max_length: int) -> Broadcast:
    """Store a broadcast and emit it to all users (or one role), except its author."""
    message = message.strip()
    if "\x00" in message:
        raise BroadcastError("message must not contain NUL characters")
    if not message:
        raise BroadcastError("message must not be empty")
    if len(message) > max_length:
        raise BroadcastError(f"message must be at most {max_length} characters")
    if role is not None and role not in ROLES:
        raise BroadcastError(f"role must be one of {', '.join(ROLES)}")
    broadcast = Broadcast(message=message, role=role, author=author)
    db.session.add(broadcast)
    db.session.flush()
    event = BroadcastEvent(broadcast_id=broadcast.id, message=message, author=author.username if author else "system")
    broadcast.outbox_id = emit(event, Everyone(role), actor_id=author.id if author else None)
    db.session.commit()
    return broadcast


def broadcast_history(limit: int = 50) -> list[dict]:
    """Return recent broadcasts, newest first, each with how many users it reached so far."""
    reach = select(Notification.outbox_id, func.count().label("reached")).group_by(Notification.outbox_id).subquery()
    rows = db.session.execute(
        select(Broadcast, func.coalesce(reach.c.reached, 0))
        .outerjoin(reach, reach.c.outbox_id == Broadcast.outbox_id)
        .order_by(Broadcast.id.desc())
        .limit(limit)
    ).all()
    return [
        {
            "id": b.id,
            "message": b.message,
            "role": b.role,
            "author": b.author.username if b.author else "system",
            "created_at": b.created_at.isoformat() + "Z",
            "reached": int(reached),
        }
        for b, reached in rows
    ]
