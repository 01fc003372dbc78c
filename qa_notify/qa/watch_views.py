"""Watch levels as JSON (``/api/<questions|topics>/<id>/watch``) and as the pages' level forms."""

from __future__ import annotations

from flask import flash, redirect, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import HiddenField, RadioField
from wtforms.validators import AnyOf, DataRequired

from ..extensions import db
from ..jsonapi import APIError, api_login_required, field, json_body
from ..models import WATCH_LEVELS, Question, Topic
from . import bp
from .watch import set_watch_level, watch_level, watch_state

WATCH_TARGETS = {"questions": ("question", Question), "topics": ("topic", Topic)}
# What each level means, as the level forms say it.
LEVEL_LABELS = {
    "question": {
        "watching": _l("Watching: every new answer"),
        "normal": _l("Normal: only what reaches you otherwise (your own question, topics, people, mentions)"),
        "muted": _l("Muted: nothing about this question"),
    },
    "topic": {
        "watching": _l("Watching: every new question and every new answer in its questions"),
        "normal": _l("Normal: every new question (following)"),
        "muted": _l("Muted: nothing from its questions, even from people you follow"),
    },
}
# Where a level form may send the user back to: a fixed list, never a URL from the request.
BACK_TO = ("page", "inbox")


class WatchForm(FlaskForm):
    """A watch level for the question or topic the form's URL names."""

    level = RadioField(_l("Notifications"), choices=list(WATCH_LEVELS), validators=[DataRequired()])
    back = HiddenField(default="page", validators=[AnyOf(BACK_TO)])


def watch_form(kind: str, level: str) -> WatchForm:
    """Return the level form of a question or topic page, showing ``level``."""
    form = WatchForm(level=level)
    form.level.choices = [(value, LEVEL_LABELS[kind][value]) for value in WATCH_LEVELS]
    return form


def _target_or_404(collection: str, target_id: int) -> str:
    """Return the kind of ``collection``; raise a 404 APIError if that question or topic does not exist."""
    kind, model = WATCH_TARGETS[collection]
    if db.session.get(model, target_id) is None:
        raise APIError(404, f"no such {kind}")
    return kind


@bp.route("/api/<any(questions, topics):collection>/<id:target_id>/watch", methods=["GET", "PUT"])
@api_login_required
def api_watch(collection: str, target_id: int):
    """Return (GET) or set (PUT ``{"level": "watching"|"normal"|"muted"}``) your level on a question or topic."""
    from flask import request

    kind = _target_or_404(collection, target_id)
    user = current_user._get_current_object()
    if request.method == "PUT":
        level = field(json_body(), "level", max_length=16)
        if level not in WATCH_LEVELS:
            raise APIError(422, f"'level' must be one of {', '.join(WATCH_LEVELS)}")
        set_watch_level(user, kind, target_id, level)
    state = watch_state(user, kind, target_id)
    return {**state, "level_text": str(LEVEL_LABELS[kind][state["level"]])}


@bp.post("/watch/<any(question, topic):kind>/<id:target_id>")
@login_required
def watch(kind: str, target_id: int):
    """Set a level from a page's form (the question or topic page, or an inbox item), then go back."""
    name = _display_name(kind, target_id)
    if name is None:
        flash(_("There is no such question.") if kind == "question" else _("There is no such topic."), "error")
        return redirect(url_for("notifications.inbox_page"))
    form = watch_form(kind, "normal")
    back = form.back.data if form.back.data in BACK_TO else "page"
    if not form.validate_on_submit():
        expired = "csrf_token" in form.errors
        flash(_("Your form expired; reload the page and try again.") if expired else _("Choose a level."), "error")
    else:
        set_watch_level(current_user._get_current_object(), kind, target_id, form.level.data)
        flash(_("%(name)s: %(level)s.", name=name, level=LEVEL_LABELS[kind][form.level.data]), "success")
    if back == "inbox":
        return redirect(url_for("notifications.inbox_page"))
    if kind == "question":
        return redirect(url_for("qa.question_page", question_id=target_id))
    return redirect(url_for("qa.topic_page", topic_id=target_id))


def _display_name(kind: str, target_id: int) -> str | None:
    """Return how a flash message names the question or topic, or None if there is none."""
    if kind == "question":
        question = db.session.get(Question, target_id)
        return None if question is None else _("“%(title)s”", title=question.title)
    topic = db.session.get(Topic, target_id)
    return None if topic is None else _("the topic “%(name)s”", name=topic.name)


@bp.app_template_global()
def watch_form_for(kind: str, target_id: int) -> WatchForm:
    """Return the level form for a question or topic page, showing the viewer's level."""
    return watch_form(kind, watch_level(current_user, kind, target_id))
