"""Q&A pages: the question feed, asking, answering, topics, user pages and follow buttons."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy import Select, func, select
from sqlalchemy.orm import joinedload, selectinload
from wtforms import HiddenField, SelectChoice, SelectMultipleField, StringField, TextAreaField
from wtforms.validators import AnyOf, DataRequired, Length, ValidationError
from wtforms.widgets import CheckboxInput, ListWidget

from ..extensions import db
from ..jsonapi import page_role_required
from ..models import Answer, Question, Topic, TopicFollow, User, question_topics
from ..notifications.triage import read_question
from . import bp
from .mentions import link_mentions, members_named
from .service import (
    MAX_BODY,
    MAX_TITLE,
    MAX_TOPICS,
    QAError,
    ask_question,
    create_topic,
    is_following,
    post_answer,
    set_follow,
)

FEED_SIZE = 30

bp.add_app_template_filter(link_mentions, "link_mentions")


class AskForm(FlaskForm):
    """A new question filed under existing topics."""

    title = StringField(_l("Title"), validators=[DataRequired(), Length(max=MAX_TITLE)])
    body = TextAreaField(_l("Details"), validators=[Length(max=MAX_BODY)])
    topics = SelectMultipleField(
        _l("Topics"), choices=[], widget=ListWidget(prefix_label=False), option_widget=CheckboxInput()
    )

    def validate_topics(self, field: SelectMultipleField) -> None:
        """Refuse more topics than a question may have."""
        if len(field.data or []) > MAX_TOPICS:
            raise ValidationError(_("Choose at most %(num)d topics.", num=MAX_TOPICS))


class AnswerForm(FlaskForm):
    """An answer to the question on the page."""

    body = TextAreaField(_l("Your answer"), validators=[DataRequired(), Length(max=MAX_BODY)])


class TopicForm(FlaskForm):
    """A new topic (moderators and admins)."""

    name = StringField(_l("Topic name"), validators=[DataRequired(), Length(max=50)])


class FollowForm(FlaskForm):
    """Follow or unfollow whatever the form's URL names."""

    action = HiddenField(validators=[AnyOf(("follow", "unfollow"))])


FOLLOW_TARGETS = {"question": Question, "topic": Topic, "user": User}


def get_or_404(model, obj_id: int):
    """Return the row with this id or answer with the 404 page."""
    obj = db.session.get(model, obj_id)
    if obj is None:
        abort(404, description=f"There is no such {model.__name__.lower()}.")
    return obj


def question_rows(query: Select, limit: int = FEED_SIZE) -> list[tuple[Question, int]]:
    """Return (question, answer count) pairs for ``query``'s questions, newest first."""
    answer_count = (
        select(func.count(Answer.id)).where(Answer.question_id == Question.id).correlate(Question).scalar_subquery()
    )
    rows = db.session.execute(
        query.add_columns(answer_count)
        .options(joinedload(Question.author), selectinload(Question.topics))
        .order_by(Question.created_at.desc(), Question.id.desc())
        .limit(limit)
    )
    return [(question, int(count)) for question, count in rows]


def target_page(kind: str, target_id: int) -> str:
    """Return the URL of the page showing a followable thing."""
    endpoint = {"question": "qa.question_page", "topic": "qa.topic_page", "user": "qa.user_page"}
    return url_for(endpoint[kind], **{f"{kind}_id": target_id})


@bp.get("/")
def home():
    """Show the most recent questions."""
    return render_template("qa/home.html", rows=question_rows(select(Question)))


@bp.get("/questions/<id:question_id>")
def question_page(question_id: int):
    """Show a question, its answers, the answer form and the follow button.

    Viewing it reads the viewer's unread notifications about it (every open tab's badge
    follows), before the page renders its own badge.
    """
    question = get_or_404(Question, question_id)
    if current_user.is_authenticated:
        read_question(current_user.id, question.id)
    return render_question(question, AnswerForm())


def render_question(question: Question, form: AnswerForm):
    """Render the question page with ``form`` (fresh, or carrying a failed answer's errors)."""
    return render_template(
        "qa/question.html",
        question=question,
        members=members_named([question.body] + [a.body for a in question.answers]),
        form=form,
        follow_form=FollowForm(),
        following=is_following(current_user, "question", question.id),
    )


@bp.post("/questions/<id:question_id>/answers")
@login_required
def answer(question_id: int):
    """Post an answer, then show it on the question page."""
    question = get_or_404(Question, question_id)
    form = AnswerForm()
    if not form.validate_on_submit():
        return render_question(question, form)
    try:
        new_answer = post_answer(current_user._get_current_object(), question, form.body.data)
    except QAError as exc:
        form.body.errors.append(str(exc))
        return render_question(question, form)
    flash(_("Your answer is posted."), "success")
    return redirect(url_for("qa.question_page", question_id=question.id, _anchor=f"answer-{new_answer.id}"))


@bp.route("/ask", methods=["GET", "POST"])
@login_required
def ask():
    """Show and handle the new-question form."""
    form = AskForm()
    form.topics.choices = [SelectChoice(name) for name in db.session.scalars(select(Topic.name).order_by(Topic.name))]
    if form.validate_on_submit():
        try:
            question = ask_question(
                current_user._get_current_object(),
                form.title.data,
                form.body.data or "",
                form.topics.data or [],
            )
        except QAError as exc:
            flash(str(exc), "error")
        else:
            flash(_("Your question is posted. You will hear of every answer."), "success")
            return redirect(url_for("qa.question_page", question_id=question.id))
    return render_template("qa/ask.html", form=form)


@bp.get("/topics")
def topics():
    """List every topic with its question count; moderators also get the new-topic form."""
    question_count = (
        select(func.count())
        .select_from(question_topics)
        .where(question_topics.c.topic_id == Topic.id)
        .correlate(Topic)
        .scalar_subquery()
    )
    rows = db.session.execute(select(Topic, question_count).order_by(Topic.name)).all()
    followed: set[int] = set()
    if current_user.is_authenticated:
        followed = set(db.session.scalars(select(TopicFollow.topic_id).where(TopicFollow.user_id == current_user.id)))
    return render_template(
        "qa/topics.html",
        rows=[(topic, int(count)) for topic, count in rows],
        followed=followed,
        follow_form=FollowForm(),
        topic_form=TopicForm(),
    )


@bp.post("/topics", endpoint="create_topic")
@page_role_required("moderator", "admin")
def create_topic_page():
    """Create a topic from the topics page."""
    form = TopicForm()
    if form.validate_on_submit():
        try:
            topic = create_topic(form.name.data)
        except QAError as exc:
            flash(str(exc), "error")
        else:
            flash(_("Topic “%(name)s” created.", name=topic.name), "success")
    else:
        flash_form_errors(form)
    return redirect(url_for("qa.topics"))


@bp.get("/topics/<id:topic_id>")
def topic_page(topic_id: int):
    """Show a topic's questions and its follow button."""
    topic = get_or_404(Topic, topic_id)
    rows = question_rows(select(Question).where(Question.topics.any(Topic.id == topic.id)))
    return render_template(
        "qa/topic.html",
        topic=topic,
        rows=rows,
        follow_form=FollowForm(),
        following=is_following(current_user, "topic", topic.id),
    )


@bp.get("/users/<id:user_id>")
def user_page(user_id: int):
    """Show a user's questions and, to others, a follow button."""
    user = get_or_404(User, user_id)
    rows = question_rows(select(Question).where(Question.author_id == user.id))
    return render_template(
        "qa/user.html",
        user=user,
        rows=rows,
        follow_form=FollowForm(),
        following=is_following(current_user, "user", user.id),
    )


@bp.post("/follow/<any(question, topic, user):kind>/<id:target_id>")
@login_required
def follow(kind: str, target_id: int):
    """Follow or unfollow a question, topic or user, then go back to its page."""
    target = get_or_404(FOLLOW_TARGETS[kind], target_id)
    form = FollowForm()
    if not form.validate_on_submit():
        flash_form_errors(form)
        return redirect(target_page(kind, target_id))
    try:
        following = set_follow(current_user._get_current_object(), kind, target_id, form.action.data == "follow")
    except QAError as exc:
        flash(str(exc), "error")
    else:
        name = display_name(kind, target)
        flash(
            _("You follow %(name)s.", name=name) if following else _("You no longer follow %(name)s.", name=name),
            "success",
        )
    return redirect(target_page(kind, target_id))


def display_name(kind: str, target: Question | Topic | User) -> str:
    """Return how a flash message names a followed thing."""
    if isinstance(target, Question):
        return _("“%(title)s”", title=target.title)
    if isinstance(target, Topic):
        return _("the topic “%(name)s”", name=target.name)
    return target.username


def flash_form_errors(form: FlaskForm) -> None:
    """Flash each validation error of a form that has no page of its own to show them on."""
    if "csrf_token" in form.errors:
        flash(_("Your form expired; reload the page and try again."), "error")
        return
    for field in form:
        for error in field.errors:
            flash(f"{field.label.text}: {error}" if field.label.text else error, "error")
