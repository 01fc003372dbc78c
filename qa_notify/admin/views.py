"""Admin pages: send broadcasts, see their reach, change users' roles."""

from __future__ import annotations

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import SelectChoice, SelectField, TextAreaField
from wtforms.validators import AnyOf, DataRequired

from ..extensions import db
from ..jsonapi import page_role_required
from ..models import ROLES, User
from . import bp
from .service import BroadcastError, RoleError, broadcast_history, change_role, send_broadcast

AUDIENCES = {"": "Everyone", "user": "Members", "moderator": "Moderators", "admin": "Admins"}
USERS_SHOWN = 100


class BroadcastForm(FlaskForm):
    """An announcement and who should hear it."""

    message = TextAreaField("Message", validators=[DataRequired()])
    role = SelectField("Send to", choices=[SelectChoice(value, label) for value, label in AUDIENCES.items()])


class RoleForm(FlaskForm):
    """A user's new role."""

    role = SelectField("Role", choices=[SelectChoice(r, r.capitalize()) for r in ROLES], validators=[AnyOf(ROLES)])


@bp.get("/admin")
@page_role_required("admin")
def admin_page():
    """Show the broadcast form, past broadcasts, and users with their roles."""
    search = request.args.get("user", "").strip()[:40]
    query = select(User).order_by(User.username).limit(USERS_SHOWN)
    if search:
        query = query.where(User.username.contains(search, autoescape=True))
    return render_template(
        "admin/index.html",
        form=BroadcastForm(),
        role_form=RoleForm(),
        broadcasts=broadcast_history(),
        users=list(db.session.scalars(query)),
        search=search,
        users_shown=USERS_SHOWN,
        max_length=current_app.config["BROADCAST_MAX_LENGTH"],
    )


@bp.post("/admin/broadcast")
@page_role_required("admin")
def broadcast_page():
    """Send a broadcast; workers deliver it, the history shows its reach as it grows."""
    form = BroadcastForm()
    if not form.validate_on_submit():
        flash("Write a message to broadcast and pick who should receive it.", "error")
        return redirect(url_for("admin.admin_page"))
    role = form.role.data or None
    try:
        send_broadcast(
            current_user._get_current_object(),
            form.message.data,
            role,
            current_app.config["BROADCAST_MAX_LENGTH"],
        )
    except BroadcastError as exc:
        flash(f"Not sent: {exc}.", "error")
    else:
        audience = AUDIENCES[form.role.data].lower()
        flash(f"Broadcast sent to {audience}; delivery is under way.", "success")
    return redirect(url_for("admin.admin_page"))


@bp.post("/admin/users/<id:user_id>/role")
@page_role_required("admin")
def set_role_page(user_id: int):
    """Change a user's role; their sessions end so the new role takes effect everywhere."""
    user = db.session.get(User, user_id)
    if user is None:
        abort(404, description="There is no such user.")
    form = RoleForm()
    if not form.validate_on_submit():
        flash(f"Choose one of: {', '.join(ROLES)}.", "error")
        return redirect(url_for("admin.admin_page"))
    try:
        changed = change_role(current_user._get_current_object(), user, form.role.data)
    except RoleError as exc:
        flash(f"Not changed: {exc}.", "error")
    else:
        if changed:
            flash(f"{user.username} is now {user.role}; they were signed out everywhere.", "success")
        else:
            flash(f"{user.username} already has the role {user.role}.", "info")
    return redirect(url_for("admin.admin_page"))
