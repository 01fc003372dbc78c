"""Q&A domain operations. Asking and answering emit notification events in the same transaction."""

from __future__ import annotations

import re

from flask_babel import gettext as _
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from ..errors import SiteError
from ..events.audiences import QuestionFollowers, TopicAndAuthorFollowers, Users
from ..events.outbox import emit
from ..events.types import Mention, NewAnswers, NewQuestion, excerpt
from ..extensions import db
from ..models import Answer, Question, QuestionFollow, Topic, TopicFollow, User, UserFollow
from .mentions import mentioned_users, unmuted
from .watch import forget_contrary_level

TOPIC_PATTERN = re.compile(r"^[\w][\w .+#-]{0,49}\Z")
MAX_TITLE = 200
MAX_BODY = 20_000
MAX_TOPICS = 5


class QAError(SiteError):
    """A Q&A request that cannot be done; ``status`` is the HTTP status to answer with."""


def _refuse_nul(*texts: str) -> None:
    """NUL characters cannot be stored in PostgreSQL text; refuse them clearly."""
    if any("\x00" in t for t in texts):
        raise QAError(_("text must not contain NUL characters"))


def question_path(question_id: int, answer_id: int | None = None) -> str:
    """Return the site path of a question (and answer); works outside a request too."""
    path = f"/questions/{int(question_id)}"
    return f"{path}#answer-{int(answer_id)}" if answer_id is not None else path


def topics_by_names(names: list[str]) -> list[Topic]:
    """Return the topics with these names; raise QAError (422) naming any that do not exist."""
    wanted = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    if len(wanted) > MAX_TOPICS:
        raise QAError(_("at most %(num)d topics", num=MAX_TOPICS))
    found = {t.name: t for t in db.session.scalars(select(Topic).where(Topic.name.in_(wanted)))}
    missing = [n for n in wanted if n not in found]
    if missing:
        raise QAError(_("unknown topic(s): %(names)s", names=", ".join(missing)))
    return [found[n] for n in wanted]


def ask_question(author: User, title: str, body: str, topic_names: list[str]) -> Question:
    """Create a question; its author follows it; its topics' and author's followers are notified."""
    title, body = title.strip(), body.strip()
    _refuse_nul(title, body)
    if not title:
        raise QAError(_("title must not be empty"))
    if len(title) > MAX_TITLE or len(body) > MAX_BODY:
        raise QAError(_("title at most %(title)d and body at most %(body)d characters", title=MAX_TITLE, body=MAX_BODY))
    question = Question(title=title, body=body, author=author, topics=topics_by_names(topic_names))
    db.session.add(question)
    db.session.flush()
    db.session.add(QuestionFollow(user_id=author.id, question_id=question.id))
    event = NewQuestion(
        question_id=question.id,
        title=question.title,
        topics=[t.name for t in question.topics],
        author=author.username,
        url=question_path(question.id),
    )
    told = _notify_mentions(author, question, None, f"{title}\n{body}", body or title)
    emit(event, TopicAndAuthorFollowers(question.id, excluded=told), actor_id=author.id)
    _commit_keeping(question, author, *question.topics)
    return question


def _notify_mentions(author: User, question: Question, answer: Answer | None, text: str, shown: str) -> list[int]:
    """Emit one ``mention`` event for the members ``text`` names; return who will get it.

    Those users are left out of the post's other event (they follow the question, say), so
    each hears of the post once, as a mention. A user who muted mentions is not counted:
    they still get the other event if they follow.
    """
    users = mentioned_users(text, author.id)
    told = unmuted([u.id for u in users], Mention.type)
    if told:
        event = Mention(
            question_id=question.id,
            question_title=question.title,
            answer_id=answer.id if answer is not None else None,
            author=author.username,
            excerpt=excerpt(shown),
            url=question_path(question.id, answer.id if answer is not None else None),
        )
        emit(event, Users(told, question_id=question.id), actor_id=author.id)
    return told


def post_answer(author: User, question: Question, body: str) -> Answer:
    """Answer a question; its author and followers are notified (never the answerer)."""
    body = body.strip()
    _refuse_nul(body)
    if not body:
        raise QAError(_("answer must not be empty"))
    if len(body) > MAX_BODY:
        raise QAError(_("answer at most %(num)d characters", num=MAX_BODY))
    answer = Answer(question=question, author=author, body=body)
    db.session.add(answer)
    db.session.flush()
    event = NewAnswers(
        question_id=question.id,
        question_title=question.title,
        answer_id=answer.id,
        author=author.username,
        excerpt=excerpt(body),
        url=question_path(question.id, answer.id),
    )
    told = _notify_mentions(author, question, answer, body, body)
    emit(event, QuestionFollowers(question.id, excluded=told), actor_id=author.id)
    _commit_keeping(answer, author, question)
    return answer


def _commit_keeping(*posted: object) -> None:
    """Commit; expire what the session holds (so it is read again when next used) but the
    ``posted`` objects.

    The post was just written in this transaction and its author and question read in it:
    expired, each would be read back with a SELECT of its own the moment the caller turns
    the post into JSON, only to find the values it has.
    """
    session = db.session()
    expire, session.expire_on_commit = session.expire_on_commit, False
    try:
        session.commit()
    finally:
        session.expire_on_commit = expire
    if expire:
        kept = {id(obj) for obj in posted}
        for obj in list(session.identity_map.values()):
            if id(obj) not in kept:
                session.expire(obj)


def create_topic(name: str) -> Topic:
    """Create a topic; raise QAError (409) if it exists."""
    name = " ".join(name.split())
    if not TOPIC_PATTERN.match(name):
        raise QAError(_("topic name must be 1-50 letters, digits, spaces or . + # - _"))
    if db.session.scalar(select(Topic.id).where(Topic.name == name)) is not None:
        raise QAError(_("topic exists"), status=409)
    topic = Topic(name=name)
    db.session.add(topic)
    db.session.commit()
    return topic


FOLLOW_MODELS = {
    "question": (QuestionFollow, QuestionFollow.user_id, QuestionFollow.question_id, "question_id"),
    "topic": (TopicFollow, TopicFollow.user_id, TopicFollow.topic_id, "topic_id"),
    "user": (UserFollow, UserFollow.follower_id, UserFollow.followed_id, "followed_id"),
}


def set_follow(user: User, kind: str, target_id: int, following: bool) -> bool:
    """Follow or unfollow a question, topic or user; return the new state. Idempotent."""
    model, who, what, target_field = FOLLOW_MODELS[kind]
    if kind == "user" and target_id == user.id:
        raise QAError(_("you cannot follow yourself"))
    exists = db.session.scalar(select(who).where(who == user.id, what == target_id)) is not None
    if following and not exists:
        who_field = "follower_id" if kind == "user" else "user_id"
        db.session.add(model(**{who_field: user.id, target_field: target_id}))
        forget_contrary_level(user.id, kind, target_id, following)
        try:
            db.session.commit()
        except IntegrityError:  # a concurrent request followed first
            db.session.rollback()
    elif not following and exists:
        db.session.execute(delete(model).where(who == user.id, what == target_id))
        forget_contrary_level(user.id, kind, target_id, following)
        db.session.commit()
    return following


def is_following(user: User, kind: str, target_id: int) -> bool:
    """True if ``user`` follows the question, topic or user ``target_id``."""
    if not user.is_authenticated:
        return False
    _model, who, what, _name = FOLLOW_MODELS[kind]
    return db.session.scalar(select(who).where(who == user.id, what == target_id)) is not None
