"""The preferences page: which types reach you on which channel, and where and when to be emailed."""

from __future__ import annotations

import logging

from flask import flash, redirect, render_template, request, url_for
from flask_babel import force_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy.exc import SQLAlchemyError
from wtforms import EmailField, RadioField, SelectChoice, SelectField, SelectMultipleField
from wtforms.validators import Length

from ..events.announce import CHANNELS
from ..events.types import MUTEABLE_TYPES, PRODUCER_TYPES, BroadcastEvent, Mention, NewAnswers, NewQuestion
from ..extensions import db
from ..i18n import LANGUAGES, select_locale
from ..mail.preferences import MAX_ADDRESS, MODE_LABELS, set_email_preferences
from ..models import EMAIL_MODES
from . import bp
from .channels import channel_matrix, set_channel_matrix, silent_types

log = logging.getLogger(__name__)

TYPE_LABELS = {
    NewQuestion.type: _l("New questions in topics I follow and from people I follow"),
    NewAnswers.type: _l("New answers to questions I follow (including my own questions)"),
    Mention.type: _l("Someone mentions me (@my-name) in a question or an answer"),
    BroadcastEvent.type: _l("Announcements from admins"),
    PRODUCER_TYPES: _l("Notifications from other services (integrations)"),
}
CHANNEL_LABELS = {"in_app": _l("In the site"), "push": _l("Push"), "email": _l("Email")}
CHANNEL_HINTS = {
    "in_app": _l("a toast in the page, or a desktop notification while its tabs are in the background"),
    "push": _l("on this device's notification centre even with every tab closed"),
    "email": _l("when you're away, or in your daily digest"),
}
LANGUAGE_CHOICES = [SelectChoice("", _l("As my browser asks")), *(SelectChoice(k, v) for k, v in LANGUAGES.items())]


def cell(key: str, channel: str) -> str:
    """Return the form value of one box of the matrix."""
    return f"{key}:{channel}"


class ChannelsForm(FlaskForm):
    """The matrix: each checked box is a type the user hears of on a channel."""

    on = SelectMultipleField("On", choices=[cell(k, c) for k in MUTEABLE_TYPES for c in CHANNELS])


class EmailPreferencesForm(FlaskForm):
    """Where and when to email the user about notifications."""

    email = EmailField(_l("Email address"), validators=[Length(max=MAX_ADDRESS)])
    email_mode = RadioField(
        _l("Email me"), choices=[SelectChoice(m, MODE_LABELS[m]) for m in EMAIL_MODES], default="away"
    )


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


class LanguageForm(FlaskForm):
    """The language of pages, notifications and emails."""

    locale = SelectField(_l("Language"), choices=LANGUAGE_CHOICES)


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
        language_form=LanguageForm(formdata=None, locale=current_user.locale or ""),
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
        off = [str(TYPE_LABELS[k]) for k, row in matrix.items() if not any(row.values())]
        saved = _("Saved.")
        if off:
            saved += " " + _("Turned off everywhere (not kept in your inbox): %(types)s.", types="; ".join(off))
        flash(saved, "success")
        return redirect(url_for("preferences.preferences_page"))
    if request.method == "POST":
        flash(_("Your form expired or was not ours; reload the page and try again."), "error")
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
        flash(_("Your form expired; reload the page and try again."), "error")
    return _render(email_form, 422)


@bp.post("/preferences/language")
@login_required
def language_page():
    """Save the language (or follow the browser's)."""
    form = LanguageForm()
    if not form.validate_on_submit():
        flash(_("Your form expired or was not ours; reload the page and try again."), "error")
        return _render(_email_form_for(current_user), 422)
    current_user.locale = form.locale.data or None
    db.session.commit()
    with force_locale(select_locale()):  # this request's language was chosen before the change
        flash(_("Saved."), "success")
    return redirect(url_for("preferences.preferences_page"))


def _email_saved_message(address: str | None, mode: str, confirmed: bool) -> str:
    if mode == "off":
        return _("Notification email is off.")
    if not address:
        return _("Add an email address to get notification emails.")
    if not confirmed:
        return _("We sent a link to %(address)s: open it to confirm the address, then emails start.", address=address)
    if mode == "digest":
        return _("A daily digest will go to %(address)s.", address=address)
    return _("What you miss while you're away will go to %(address)s.", address=address)
