"""The preferences page: which types reach you on which channel, and where and when to be emailed."""

from __future__ import annotations

import logging

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy.exc import SQLAlchemyError
from wtforms import EmailField, RadioField, SelectChoice, SelectMultipleField
from wtforms.validators import Length

from ..events.announce import CHANNELS
from ..events.types import MUTEABLE_TYPES, PRODUCER_TYPES, BroadcastEvent, Mention, NewAnswers, NewQuestion
from ..extensions import db
from ..mail.preferences import MAX_ADDRESS, MODE_LABELS, set_email_preferences
from ..models import EMAIL_MODES
from . import bp
from .channels import channel_matrix, set_channel_matrix, silent_types

log = logging.getLogger(__name__)

TYPE_LABELS = {
    NewQuestion.type: "New questions in topics I follow and from people I follow",
    NewAnswers.type: "New answers to questions I follow (including my own questions)",
    Mention.type: "Someone mentions me (@my-name) in a question or an answer",
    BroadcastEvent.type: "Announcements from admins",
    PRODUCER_TYPES: "Notifications from other services (integrations)",
}
CHANNEL_LABELS = {"in_app": "In the site", "push": "Push", "email": "Email"}
CHANNEL_HINTS = {
    "in_app": "a toast in the page, or a desktop notification while its tabs are in the background",
    "push": "on this device's notification centre even with every tab closed",
    "email": "when you're away, or in your daily digest",
}


def cell(key: str, channel: str) -> str:
    """Return the form value of one box of the matrix."""
    return f"{key}:{channel}"


class ChannelsForm(FlaskForm):
    """The matrix: each checked box is a type the user hears of on a channel."""

    on = SelectMultipleField("On", choices=[cell(k, c) for k in MUTEABLE_TYPES for c in CHANNELS])


class EmailPreferencesForm(FlaskForm):
    """Where and when to email the user about notifications."""

    email = EmailField("Email address", validators=[Length(max=MAX_ADDRESS)])
    email_mode = RadioField("Email me", choices=[SelectChoice(m, MODE_LABELS[m]) for m in EMAIL_MODES], default="away")


@bp.app_context_processor
def inject_silent_types() -> dict:
    """Give every page the types it must not toast (in-app off): ``<body data-silent>``."""
    if not current_user.is_authenticated:
        return {}
    try:
        return {"silent_types": silent_types(current_user.id)}
    except SQLAlchemyError:
        db.session.rollback()  # the error page must still render when the database failed
        log.warning("silent types unavailable", exc_info=True)
        return {}


def _render(email_form: EmailPreferencesForm, status: int = 200):
    """The page with the user's matrix as saved and ``email_form`` as given."""
    page = render_template(
        "preferences/preferences.html",
        form=ChannelsForm(formdata=None),
        matrix=channel_matrix(current_user.id),
        labels=TYPE_LABELS,
        channel_labels=CHANNEL_LABELS,
        channel_hints=CHANNEL_HINTS,
        email_form=email_form,
    )
    return page, status


@bp.route("/preferences", methods=["GET", "POST"])
@login_required
def preferences_page():
    """Show the matrix of types and channels, and save it."""
    form = ChannelsForm()
    if form.validate_on_submit():
        checked = set(form.on.data or [])
        changes = {k: {c: cell(k, c) in checked for c in CHANNELS} for k in MUTEABLE_TYPES}
        matrix = set_channel_matrix(current_user.id, changes)
        off = [TYPE_LABELS[k] for k, row in matrix.items() if not any(row.values())]
        flash(
            "Saved." + (f" Turned off everywhere (not kept in your inbox): {'; '.join(off)}." if off else ""), "success"
        )
        return redirect(url_for("preferences.preferences_page"))
    if request.method == "POST":
        flash("Your form expired or was not ours; reload the page and try again.", "error")
        return _render(_email_form_for(current_user), 422)
    return _render(_email_form_for(current_user))


def _email_form_for(user) -> EmailPreferencesForm:
    """Return the email form filled with ``user``'s current settings."""
    form = EmailPreferencesForm(formdata=None)
    form.email.data = user.email or ""
    form.email_mode.data = user.email_mode
    return form


@bp.post("/preferences/email")
@login_required
def email_preferences_page():
    """Save the email address and when to email."""
    email_form = EmailPreferencesForm()
    if email_form.validate_on_submit():
        try:
            user = set_email_preferences(
                current_user.id, {"email": email_form.email.data or "", "email_mode": email_form.email_mode.data}
            )
        except ValueError as exc:
            email_form.email.errors.append(str(exc))
        else:
            flash(_email_saved_message(user.email, user.email_mode, user.email_verified_at is not None), "success")
            return redirect(url_for("preferences.preferences_page"))
    elif not email_form.errors.keys() - {"csrf_token"}:
        flash("Your form expired; reload the page and try again.", "error")
    return _render(email_form, 422)


def _email_saved_message(address: str | None, mode: str, confirmed: bool) -> str:
    if mode == "off":
        return "Notification email is off."
    if not address:
        return "Add an email address to get notification emails."
    if not confirmed:
        return f"We sent a link to {address}: open it to confirm the address, then emails start."
    if mode == "digest":
        return f"A daily digest will go to {address}."
    return f"What you miss while you're away will go to {address}."
