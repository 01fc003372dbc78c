"""Inbox and preference pages, and the unread count every page's badge shows."""

from __future__ import annotations

import logging

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy.exc import SQLAlchemyError
from wtforms import BooleanField, EmailField, HiddenField, RadioField, SelectChoice, SelectMultipleField
from wtforms.validators import Length
from wtforms.widgets import CheckboxInput, ListWidget

from ..events.types import MUTEABLE_TYPES, BroadcastEvent, Mention, NewAnswers, NewQuestion
from ..extensions import db
from ..mail.preferences import MAX_ADDRESS, MODE_LABELS, set_email_preferences
from ..models import EMAIL_MODES, valid_id
from ..urls import site_path
from . import bp, wording
from .inbox import list_groups, mark_read, muted_types, set_muted_types, unread_count

log = logging.getLogger(__name__)
PAGE_SIZE = 20
MAX_IDS = 1000
TYPE_LABELS = {
    NewQuestion.type: "New questions in topics I follow and from people I follow",
    NewAnswers.type: "New answers to questions I follow (including my own questions)",
    Mention.type: "Someone mentions me (@my-name) in a question or an answer",
    BroadcastEvent.type: "Announcements from admins",
}


class MarkReadForm(FlaskForm):
    """Mark one notification (``ids``), several (space-separated) or ``all`` read."""

    ids = HiddenField()
    all = BooleanField()
    before = HiddenField()


class PreferencesForm(FlaskForm):
    """The event types a user does not want to hear about."""

    muted = SelectMultipleField(
        "Mute",
        choices=[SelectChoice(t, TYPE_LABELS.get(t, t)) for t in MUTEABLE_TYPES],
        widget=ListWidget(prefix_label=False),
        option_widget=CheckboxInput(),
    )


class EmailPreferencesForm(FlaskForm):
    """Where and when to email the user about notifications."""

    email = EmailField("Email address", validators=[Length(max=MAX_ADDRESS)])
    email_mode = RadioField("Email me", choices=[SelectChoice(m, MODE_LABELS[m]) for m in EMAIL_MODES], default="away")


@bp.app_context_processor
def inject_unread_count() -> dict:
    """Give every template the logged-in user's unread count for the nav badge."""
    if not current_user.is_authenticated:
        return {}
    try:
        return {"unread_count": unread_count(current_user.id)}
    except SQLAlchemyError:
        # The error page must still render when the database is what failed.
        db.session.rollback()
        log.warning("unread count unavailable", exc_info=True)
        return {}


bp.add_app_template_filter(site_path, "site_path")
bp.add_app_template_global(wording.describe, "describe")


def id_arg(raw: str | None) -> int | None:
    """Return ``raw`` as a notification id, or None if it is not a plausible one."""
    if raw is None or not raw.isascii() or not raw.isdigit() or len(raw) > 10:
        return None
    value = int(raw)
    return value if valid_id(value) else None


@bp.get("/inbox")
@login_required
def inbox_page():
    """Show the inbox newest first, ``PAGE_SIZE`` at a time, older pages via ``?before=<id>``."""
    raw_before = request.args.get("before")
    before = id_arg(raw_before)
    if raw_before is not None and before is None:
        flash("That page does not exist; here are your newest notifications.", "error")
    items = list_groups(current_user.id, before, PAGE_SIZE + 1)
    older = items[PAGE_SIZE - 1].id if len(items) > PAGE_SIZE else None
    return render_template(
        "notifications/inbox.html",
        items=items[:PAGE_SIZE],
        before=before,
        older=older,
        form=MarkReadForm(),
    )


@bp.post("/inbox/read")
@login_required
def mark_read_page():
    """Mark the chosen notifications (or all) read, then return to the same inbox page."""
    form = MarkReadForm()
    before = id_arg(form.before.data)
    back = redirect(url_for("notifications.inbox_page", before=before))
    if not form.validate_on_submit():
        flash("Your form expired; reload the page and try again.", "error")
        return back
    if form.all.data:
        mark_read(current_user.id, None)
        flash("All notifications marked read.", "success")
        return back
    ids = [id_arg(part) for part in (form.ids.data or "").split()]
    if not ids or None in ids or len(ids) > MAX_IDS:
        flash("Choose which notifications to mark read.", "error")
        return back
    changed, _ = mark_read(current_user.id, ids)
    noun = "notification" if len(changed) == 1 else "notifications"
    flash(f"Marked {len(changed)} {noun} read.", "success")
    return back


@bp.route("/preferences", methods=["GET", "POST"])
@login_required
def preferences_page():
    """Show and save which event types the user muted."""
    form = PreferencesForm()
    if form.validate_on_submit():
        try:
            saved = set_muted_types(current_user.id, form.muted.data or [])
        except ValueError as exc:
            flash(str(exc), "error")
        else:
            flash(f"Muted: {', '.join(saved)}." if saved else "Nothing is muted.", "success")
            return redirect(url_for("notifications.preferences_page"))
    elif request.method == "GET":
        form.muted.data = muted_types(current_user.id)
    return render_template(
        "notifications/preferences.html", form=form, labels=TYPE_LABELS, email_form=_email_form_for(current_user)
    )


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
            return redirect(url_for("notifications.preferences_page"))
    elif not email_form.errors.keys() - {"csrf_token"}:
        flash("Your form expired; reload the page and try again.", "error")
    form = PreferencesForm(formdata=None)
    form.muted.data = muted_types(current_user.id)
    return render_template("notifications/preferences.html", form=form, labels=TYPE_LABELS, email_form=email_form), 422


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
