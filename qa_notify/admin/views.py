"""Admin pages: send broadcasts, see their reach, change users' roles."""

from __future__ import annotations

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import SelectChoice, SelectField, TextAreaField
from wtforms.validators import AnyOf, DataRequired

from ..extensions import db
from ..i18n import ROLE_NAMES
from ..jsonapi import page_role_required
from ..models import ROLES, User
from . import bp
from .service import BroadcastError, RoleError, broadcast_history, change_role, send_broadcast

AUDIENCES = {"": _l("Everyone"), "user": _l("Members"), "moderator": _l("Moderators"), "admin": _l("Admins")}
USERS_SHOWN = 100


class BroadcastForm(FlaskForm):
    """An announcement and who should hear it."""

    message = TextAreaField(_l("Message"), validators=[DataRequired()])
    role = SelectField(_l("Send to"), choices=[SelectChoice(value, label) for value, label in AUDIENCES.items()])


class RoleForm(FlaskForm):
    """A user's new role."""

    role = SelectField(_l("Role"), choices=[SelectChoice(r, ROLE_NAMES[r]) for r in ROLES], validators=[AnyOf(ROLES)])


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
        flash(_("Write a message to broadcast and pick who should receive it."), "error")
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
        flash(_("Not sent: %(reason)s.", reason=exc), "error")
    else:
        flash(
            _("Broadcast sent to %(audience)s; delivery is under way.", audience=AUDIENCES[form.role.data]), "success"
        )
    return redirect(url_for("admin.admin_page"))


@bp.post("/admin/users/<id:user_id>/role")
@page_role_required("admin")
def set_role_page(user_id: int):
    """Change a user's role; their sessions end so the new role takes effect everywhere."""
    user = db.session.get(User, user_id)
    if user is None:
        abort(404, description=_("There is no such user."))
    form = RoleForm()
    if not form.validate_on_submit():
        flash(_("Choose one of: %(roles)s.", roles=", ".join(str(ROLE_NAMES[r]) for r in ROLES)), "error")
        return redirect(url_for("admin.admin_page"))
    try:
        changed = change_role(current_user._get_current_object(), user, form.role.data)
    except RoleError as exc:
        flash(_("Not changed: %(reason)s.", reason=exc), "error")
    else:
        if changed:
            flash(
                _(
                    "%(name)s is now %(role)s; they were signed out everywhere.",
                    name=user.username,
                    role=ROLE_NAMES[user.role],
                ),
                "success",
            )
        else:
            flash(_("%(name)s already has the role %(role)s.", name=user.username, role=ROLE_NAMES[user.role]), "info")
    return redirect(url_for("admin.admin_page"))
