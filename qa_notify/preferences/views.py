"""The preferences page: mute event types, and where and when to be emailed."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import EmailField, RadioField, SelectChoice, SelectMultipleField
from wtforms.validators import Length
from wtforms.widgets import CheckboxInput, ListWidget

from ..events.types import MUTEABLE_TYPES, BroadcastEvent, Mention, NewAnswers, NewQuestion
from ..mail.preferences import MAX_ADDRESS, MODE_LABELS, set_email_preferences
from ..models import EMAIL_MODES
from ..notifications.inbox import muted_types, set_muted_types
from . import bp

TYPE_LABELS = {
    NewQuestion.type: "New questions in topics I follow and from people I follow",
    NewAnswers.type: "New answers to questions I follow (including my own questions)",
    Mention.type: "Someone mentions me (@my-name) in a question or an answer",
    BroadcastEvent.type: "Announcements from admins",
}


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
            return redirect(url_for("preferences.preferences_page"))
    elif request.method == "GET":
        form.muted.data = muted_types(current_user.id)
    return render_template(
        "preferences/preferences.html", form=form, labels=TYPE_LABELS, email_form=_email_form_for(current_user)
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
            return redirect(url_for("preferences.preferences_page"))
    elif not email_form.errors.keys() - {"csrf_token"}:
        flash("Your form expired; reload the page and try again.", "error")
    form = PreferencesForm(formdata=None)
    form.muted.data = muted_types(current_user.id)
    return render_template("preferences/preferences.html", form=form, labels=TYPE_LABELS, email_form=email_form), 422


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
