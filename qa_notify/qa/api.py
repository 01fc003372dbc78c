"""JSON endpoints for the Q&A: topics, questions, answers, follows, roles."""

from __future__ import annotations

from flask import jsonify
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select

from ..admin.service import change_role
from ..extensions import db
from ..jsonapi import APIError, api_login_required, field, json_body, role_required
from ..models import Question, Topic, User
from . import bp
from .service import ask_question, create_topic, post_answer, set_follow


def _get_or_404(model, obj_id: int, what: str):
    obj = db.session.get(model, obj_id)
    if obj is None:
        raise APIError(404, f"no such {what}")
    return obj


@bp.get("/api/topics")
def api_topics():
    """List every topic."""
    topics = db.session.scalars(select(Topic).order_by(Topic.name))
    return jsonify(topics=[t.to_dict() for t in topics])


@bp.post("/api/topics")
@role_required("moderator", "admin")
def api_create_topic():
    """Create a topic (moderators and admins)."""
    topic = create_topic(field(json_body(), "name", max_length=50))
    return jsonify(topic.to_dict()), 201


@bp.post("/api/questions")
@api_login_required
def api_ask():
    """Ask a question under existing topics; the author follows it."""
    data = json_body()
    topics = field(data, "topics", list, required=False, default=[])
    if not all(isinstance(t, str) for t in topics):
        raise APIError(422, _("'topics' must be a list of topic names"))
    question = ask_question(
        current_user._get_current_object(),
        field(data, "title", max_length=200),
        field(data, "body", required=False, default=""),
        topics,
    )
    return jsonify(question.to_dict()), 201


@bp.get("/api/questions/<id:question_id>")
def api_question(question_id: int):
    """Return a question with its answers."""
    return jsonify(_get_or_404(Question, question_id, "question").to_dict(with_answers=True))


@bp.post("/api/questions/<id:question_id>/answers")
@api_login_required
def api_answer(question_id: int):
    """Answer a question."""
    question = _get_or_404(Question, question_id, "question")
    answer = post_answer(current_user._get_current_object(), question, field(json_body(), "body"))
    return jsonify(answer.to_dict()), 201


FOLLOW_TARGETS = {
    "questions": ("question", Question),
    "topics": ("topic", Topic),
    "users": ("user", User),
}


@bp.route(
    "/api/<any(questions, topics, users):collection>/<id:target_id>/follow",
    methods=["POST", "DELETE"],
)
@api_login_required
def api_follow(collection: str, target_id: int):
    """Follow (POST) or unfollow (DELETE) a question, topic or user."""
    from flask import request

    kind, model = FOLLOW_TARGETS[collection]
    _get_or_404(model, target_id, kind)
    following = set_follow(current_user._get_current_object(), kind, target_id, request.method == "POST")
    return jsonify({"following": following, kind: target_id})


@bp.put("/api/users/<id:user_id>/role")
@role_required("admin")
def api_set_role(user_id: int):
    """Change a user's role (admins); their sessions and streams end."""
    role = field(json_body(), "role")
    user = _get_or_404(User, user_id, "user")
    change_role(current_user._get_current_object(), user, role)
    return jsonify(user.to_dict())
