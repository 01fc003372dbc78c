"""Management commands, available as ``manage.py <command>`` and ``flask <command>``."""

from __future__ import annotations

import json
import random

import click
from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import func, select

from .admin.service import BroadcastError, send_broadcast
from .auth.service import AccountError, register_user
from .events.audiences import Users
from .events.outbox import emit
from .events.types import EVENT_TYPE_PATTERN, CustomEvent
from .extensions import db
from .models import ROLES, QuestionFollow, Topic, TopicFollow, User, UserFollow

DEMO_PASSWORD = "demo-pass-123"
DEMO_USERS = [
    ("alice", "admin"),
    ("bob", "moderator"),
    ("carol", "user"),
    ("dave", "user"),
    ("erin", "user"),
]
DEMO_TOPICS = ["python", "flask", "redis", "celery", "databases", "career"]
DEMO_QUESTIONS = [
    (
        "How do I stream Server-Sent Events from Flask?",
        "flask",
        "I want live updates without WebSockets.",
    ),
    ("Why does my Celery task run twice?", "celery", "It runs again after a worker restart."),
    ("Redis pub/sub or streams for notifications?", "redis", "Which one survives a reconnect?"),
    (
        "SQLite or PostgreSQL for a small Q&A site?",
        "databases",
        "Starting small, planning to grow.",
    ),
    ("What is a good first open-source contribution?", "career", "I know some Python."),
    ("How do gevent and threads differ?", "python", "Both seem to run things at once."),
]


def register(app: Flask) -> None:
    """Attach the commands to ``app.cli``."""
    for command in (init_db, create_user, seed_demo, notify, broadcast):
        app.cli.add_command(command)


@click.command("init-db")
def init_db() -> None:
    """Create or upgrade the database schema (runs the migrations)."""
    upgrade()
    click.echo("database is up to date")


@click.command("create-user")
@click.argument("username")
@click.option("--role", type=click.Choice(ROLES), default="user", show_default=True)
@click.password_option(prompt="Password", help="password (prompted when omitted)")
def create_user(username: str, role: str, password: str) -> None:
    """Create an account with the given role."""
    try:
        user = register_user(username, password, role)
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created {user.username} ({user.role}), id {user.id}")


@click.command("seed-demo")
def seed_demo() -> None:
    """Add demo users, topics, follows, questions and answers; print the demo logins."""
    if db.session.scalar(select(func.count()).select_from(User)):
        click.echo("the database already has users; not seeding")
        return
    from .qa.service import ask_question, post_answer

    users = {name: register_user(name, DEMO_PASSWORD, role) for name, role in DEMO_USERS}
    topics = {name: Topic(name=name) for name in DEMO_TOPICS}
    db.session.add_all(topics.values())
    db.session.commit()
    for name in DEMO_TOPICS:
        db.session.add(TopicFollow(user_id=users["bob"].id, topic_id=topics[name].id))
    db.session.add(UserFollow(follower_id=users["carol"].id, followed_id=users["dave"].id))
    db.session.commit()
    rng = random.Random(7)
    names = list(users)
    with click.progressbar(DEMO_QUESTIONS, label="seeding questions") as bar:
        for title, topic, body in bar:
            author = users[rng.choice(names)]
            question = ask_question(author, title, body, [topic])
            for other in rng.sample([n for n in names if users[n] is not author], 2):
                db.session.add(QuestionFollow(user_id=users[other].id, question_id=question.id))
            db.session.commit()
            answerer = users[rng.choice([n for n in names if users[n] is not author])]
            post_answer(
                answerer,
                question,
                f"A first answer from {answerer.username}: it depends on your load.",
            )
    click.echo(f"demo logins (password {DEMO_PASSWORD!r}): " + ", ".join(f"{n} ({r})" for n, r in DEMO_USERS))


@click.command("notify")
@click.argument("username")
@click.argument("event_type")
@click.argument("payload")
def notify(username: str, event_type: str, payload: str) -> None:
    """Send one event of EVENT_TYPE with JSON PAYLOAD to USERNAME."""
    user = db.session.scalar(select(User).where(User.username == username))
    if user is None:
        raise click.ClickException(f"no such user: {username}")
    if not EVENT_TYPE_PATTERN.match(event_type):
        raise click.ClickException("event type must match [a-z][a-z0-9_]{0,31}")
    try:
        data = json.loads(payload)
    except ValueError as exc:
        raise click.ClickException(f"payload is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise click.ClickException("payload must be a JSON object")
    outbox_id = emit(CustomEvent(name=event_type, data=data), Users([user.id]))
    db.session.commit()
    click.echo(f"queued event {outbox_id} for {username}")


@click.command("broadcast")
@click.argument("message")
@click.option("--role", type=click.Choice(ROLES), default=None, help="only users with this role")
def broadcast(message: str, role: str | None) -> None:
    """Send MESSAGE to every user (or every user with --role)."""
    from flask import current_app

    try:
        sent = send_broadcast(None, message, role, current_app.config["BROADCAST_MAX_LENGTH"])
    except BroadcastError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"broadcast {sent.id} queued for {role or 'everyone'}")
