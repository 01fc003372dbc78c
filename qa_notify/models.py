"""The Q&A domain: users, topics, questions, answers, follows, and the notification records."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast

from flask_login import UserMixin
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from .extensions import Base, db

# Every model's base: Flask-SQLAlchemy's ``db.Model`` (built from ``Base``), which mypy cannot
# follow as a class; it is told the declarative base it is.
if TYPE_CHECKING:
    Model = Base
else:
    Model = db.Model

ROLES = ("user", "moderator", "admin")
# off: never; away: unread notifications the user was not there to see; digest: once a day.
EMAIL_MODES = ("off", "away", "digest")
# The largest id any row can have: ids are INTEGER columns, 32-bit on PostgreSQL. Every id
# the site accepts (URL, JSON body, query string, ingest envelope) is checked against it,
# so an absurd one is a clear 404/422, never a database overflow.
MAX_ID = 2**31 - 1


def valid_id(value: object) -> bool:
    """True for an int (not a bool) that could be a row id: 1..MAX_ID."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ID


def utcnow() -> datetime:
    """Return the current time as a naive UTC datetime (portable across SQLite and PostgreSQL)."""
    return datetime.now(UTC).replace(tzinfo=None)


question_topics = Table(
    "question_topics",
    db.metadata,
    Column("question_id", ForeignKey("questions.id", ondelete="CASCADE"), primary_key=True),
    Column("topic_id", ForeignKey("topics.id", ondelete="CASCADE"), primary_key=True),
)


class User(UserMixin, Model):
    """A member of the site; ``role`` is user, moderator or admin."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(40), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16), default="user")
    # Bumped on logout, password change and role change: old sessions stop being valid.
    session_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # Email: an address is optional; ``email_mode`` is one of EMAIL_MODES.
    email: Mapped[str | None] = mapped_column(String(254), nullable=True)
    email_mode: Mapped[str] = mapped_column(String(8), default="away", server_default="away")
    # Set when the owner confirmed the address from its mailbox; only then is it emailed.
    email_verified_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # When the last notification email went out (EMAIL_MIN_INTERVAL is counted from it).
    last_emailed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # Notifications created up to here were already considered for an away email.
    email_checked_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # The newest notification a daily digest covered.
    digest_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # Emails that could not be handed to the mail server in a row, and when to try again
    # (set while one is owed: the mail server was down, or refused before taking it).
    email_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    email_retry_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # The language the user chose (qa_notify.i18n.LANGUAGES), or None: their browser's, which
    # is saved at each sign-in for what is written to them outside a request (emails, pushes).
    locale: Mapped[str | None] = mapped_column(String(8), nullable=True)
    browser_locale: Mapped[str | None] = mapped_column(String(8), nullable=True)
    # -- Quiet hours and snooze (qa_notify.quiet) --
    # The user's IANA time zone; None until the browser or the user sets one (UTC is used).
    time_zone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Quiet hours as minutes after local midnight (start == end is refused); None: none.
    # A window may cross midnight (22:00-08:00 is start 1320, end 480).
    quiet_start: Mapped[int | None] = mapped_column(Integer, nullable=True)
    quiet_end: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Snoozed until then (UTC); a past time means not snoozed.
    snooze_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # Set when a quiet period began (its start), cleared when its one summary was sent.
    quiet_summary_from: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # When the daily digest run last took this user (the digest goes at their local hour).
    digest_checked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    def set_password(self, password: str) -> None:
        """Store a salted hash of ``password``."""
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        """Return True if ``password`` matches the stored hash."""
        return check_password_hash(self.password_hash, password)

    def get_id(self) -> str:
        """Return the session identity: user id plus session version, so logout invalidates it."""
        return f"{self.id}:{self.session_version}"

    @property
    def is_moderator(self) -> bool:
        """True for moderators and admins."""
        return self.role in ("moderator", "admin")

    @property
    def is_admin(self) -> bool:
        """True for admins."""
        return self.role == "admin"

    def to_dict(self) -> dict:
        """Return the public JSON form of the user."""
        return {"id": self.id, "username": self.username, "role": self.role}


class Topic(Model):
    """A subject questions are filed under; moderators follow topics to watch them."""

    __tablename__ = "topics"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    def to_dict(self) -> dict:
        """Return the JSON form of the topic."""
        return {"id": self.id, "name": self.name}


class Question(Model):
    """A question asked by a user, filed under topics."""

    __tablename__ = "questions"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text, default="")
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)

    author: Mapped[User] = relationship()
    topics: Mapped[list[Topic]] = relationship(secondary=question_topics, order_by="Topic.name")
    answers: Mapped[list[Answer]] = relationship(
        back_populates="question", order_by="Answer.id", cascade="all, delete-orphan"
    )

    def to_dict(self, with_answers: bool = False) -> dict:
        """Return the JSON form of the question, optionally with its answers."""
        data = {
            "id": self.id,
            "title": self.title,
            "body": self.body,
            "author": self.author.to_dict(),
            "topics": [t.name for t in self.topics],
            "created_at": self.created_at.isoformat() + "Z",
        }
        if with_answers:
            data["answers"] = [a.to_dict() for a in self.answers]
        return data


class Answer(Model):
    """An answer to a question."""

    __tablename__ = "answers"

    id: Mapped[int] = mapped_column(primary_key=True)
    question_id: Mapped[int] = mapped_column(ForeignKey("questions.id", ondelete="CASCADE"), index=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    question: Mapped[Question] = relationship(back_populates="answers")
    author: Mapped[User] = relationship()

    def to_dict(self) -> dict:
        """Return the JSON form of the answer."""
        return {
            "id": self.id,
            "question_id": self.question_id,
            "author": self.author.to_dict(),
            "body": self.body,
            "created_at": self.created_at.isoformat() + "Z",
        }


class QuestionFollow(Model):
    """A user following a question: they hear of every new answer."""

    __tablename__ = "question_follows"

    # A question's followers in user id order, for keyset batches (events.recipients).
    __table_args__ = (Index("ix_question_follows_question_user", "question_id", "user_id"),)

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    question_id: Mapped[int] = mapped_column(ForeignKey("questions.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class TopicFollow(Model):
    """A user following a topic: they hear of every new question in it."""

    __tablename__ = "topic_follows"

    __table_args__ = (Index("ix_topic_follows_topic_user", "topic_id", "user_id"),)

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class UserFollow(Model):
    """A user following another user: they hear of every question that user asks."""

    __tablename__ = "user_follows"

    __table_args__ = (Index("ix_user_follows_followed_follower", "followed_id", "follower_id"),)

    follower_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    followed_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class MutedType(Model):
    """An event type (or ``producers``, every producer's type) a user turned off on every channel.

    The fan-out reads only this: such an event gets no inbox row at all. A type still on
    somewhere is never here; its channels turned off are ``ChannelMute`` rows.
    """

    __tablename__ = "muted_types"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(32), primary_key=True)


class ChannelMute(Model):
    """One channel (``in_app``, ``push``, ``email``) a user turned off for a type still on elsewhere.

    The event is kept in the inbox; it is just not announced on this channel.
    """

    __tablename__ = "channel_mutes"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(32), primary_key=True)
    channel: Mapped[str] = mapped_column(String(8), primary_key=True)


class OutboxEvent(Model):
    """An event written in the same transaction as the domain change that caused it.

    Workers turn each row into notifications; ``delivered_at`` is set once the fan-out finished.
    """

    __tablename__ = "outbox_events"
    __table_args__ = (
        UniqueConstraint("source_key", name="uq_outbox_source_key"),
        # The rows waiting for delivery, in id order: what a drain claims and the relay counts.
        Index("ix_outbox_events_waiting", "delivered_at", "failed_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict] = mapped_column(JSON)
    # Who must hear of it: an events.audiences dataclass as JSON, {"kind": "new_question", "question_id": ...}.
    audience: Mapped[dict] = mapped_column(JSON)
    actor_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Where an event from outside came from, e.g. "ingest:<stream entry id>": unique, so an
    # entry read twice (a worker died before acknowledging it) becomes one event, not two.
    source_key: Mapped[str | None] = mapped_column(String(80), nullable=True)
    # Fan-outs that raised something other than a passing outage; at OUTBOX_MAX_FAILURES the
    # row is marked failed and the relay stops retrying it (an admin can retry it).
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    failed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)
    # Notifications of one group (same key, all unread) show as one inbox item ("bob and 4
    # others answered ..."); None: the event is a group of its own. Set once, at emit time.
    group_key: Mapped[str | None] = mapped_column(String(120), nullable=True)
    # A drain task's claim (see events.drain): no other drain takes the row before
    # ``claimed_until``; the same task, redelivered after its worker died, takes it again.
    # After a failed try it holds the row back until the next try is due.
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The question an event is about (answers, mentions, a new question), copied from the
    # payload at emit time: an indexed column, so the inbox's question filter and reading a
    # question's notifications when it is viewed are plain indexed lookups on any database.
    question_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)


class Notification(Model):
    """One event in one user's inbox: the system of record for what a user was told.

    The payload lives once on the outbox event; a row here is just (user, event, read?),
    so telling 100,000 followers writes 100,000 small rows, not 100,000 payload copies.
    """

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("user_id", "outbox_id", name="uq_notification_user_outbox"),
        Index("ix_notifications_user_id_id", "user_id", "id"),
        Index("ix_notifications_user_unread", "user_id", "read_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox_events.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # Indexed on its own for the retention purge (read long ago, any user).
    read_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)
    # Archived ("done"): out of the default inbox view; archiving reads it too.
    archived_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # The email that told the user of it (away email or digest), recorded before sending.
    email_id: Mapped[int | None] = mapped_column(
        ForeignKey("email_messages.id", ondelete="SET NULL"), nullable=True, index=True
    )

    event: Mapped[OutboxEvent] = relationship(lazy="joined", innerjoin=True)

    @property
    def event_type(self) -> str:
        """The event's type (``new_answers``, ...)."""
        return self.event.event_type

    @property
    def payload(self) -> dict:
        """The event's payload, shared by every recipient."""
        return self.event.payload

    def to_dict(self) -> dict:
        """Return the JSON form of the inbox item."""
        return {
            "id": self.id,
            "type": self.event_type,
            "payload": self.payload,
            "created_at": self.created_at.isoformat() + "Z",
            "read": self.read_at is not None,
        }


def inbox_insert(dialect_name: str | None = None):
    """Return an INSERT into the inbox that skips the rows it already holds (one per user and event).

    A Core insert on the table: one executemany (or one ``INSERT ... SELECT``), no ORM
    bookkeeping per row; a retried delivery inserts nothing twice.
    """
    return _inbox_insert(dialect_name or db.session.get_bind().dialect.name)


@functools.cache
def _inbox_insert(dialect: str):
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    table = cast(Table, Notification.__table__)
    return insert(table).on_conflict_do_nothing(index_elements=["user_id", "outbox_id"])


_INBOX_COLUMNS = ("user_id", "outbox_id", "created_at")


@functools.cache
def _inbox_insert_sql(dialect: Dialect) -> tuple[str, bool]:
    """``inbox_insert`` of the three columns as this dialect's SQL, and whether it takes tuples."""
    compiled = inbox_insert(dialect.name).compile(dialect=dialect, column_keys=list(_INBOX_COLUMNS))
    if compiled.positiontup is not None and tuple(compiled.positiontup) != _INBOX_COLUMNS:
        raise RuntimeError(f"unexpected inbox insert parameters {compiled.positiontup}")
    return str(compiled), compiled.positiontup is not None


def insert_inbox_rows(pairs: list[tuple[int, int]], created_at: datetime) -> None:
    """Insert an inbox row per ``(user id, outbox id)`` not stored yet, in one executemany.

    The statement is compiled once and the rows go to the driver as they are: SQLAlchemy's
    work per row (a parameter dict built, the timestamp formatted) was a sixth of a large
    fan-out's CPU. The timestamp is formatted once, by the column's own type.
    """
    connection = db.session.connection()
    sql, positional = _inbox_insert_sql(connection.dialect)
    to_db = Notification.__table__.c.created_at.type.dialect_impl(connection.dialect).bind_processor(connection.dialect)
    stamp = to_db(created_at) if to_db else created_at
    if positional:
        connection.exec_driver_sql(sql, [(uid, oid, stamp) for uid, oid in pairs])
    else:
        connection.exec_driver_sql(
            sql, [dict(zip(_INBOX_COLUMNS, (uid, oid, stamp), strict=True)) for uid, oid in pairs]
        )


class EmailMessage(Model):
    """One notification email to one user: recorded (``sending``) before it is handed to SMTP.

    ``sent`` once the server took it. A row left ``sending`` (the worker died mid-send) is
    never sent again: an email may be lost that way, never doubled; the inbox keeps it all.
    """

    __tablename__ = "email_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # away | digest
    # sending | sent | abandoned; indexed so /metrics counts the few not "sent" cheaply.
    status: Mapped[str] = mapped_column(String(12), default="sending", index=True)
    notification_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class Broadcast(Model):
    """An announcement an admin sent to everyone or to one role."""

    __tablename__ = "broadcasts"

    id: Mapped[int] = mapped_column(primary_key=True)
    message: Mapped[str] = mapped_column(Text)
    role: Mapped[str | None] = mapped_column(String(16), nullable=True)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox_events.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    author: Mapped[User | None] = relationship()


# Watch levels (issue 18): how much a user hears of one question or topic. "normal" is the
# default and has no row; a question's "watching" is its QuestionFollow row, so only its
# "muted" is stored here; a topic's "watching" and "muted" are (its "normal" is following).
WATCH_KINDS = ("question", "topic")
WATCH_LEVELS = ("watching", "normal", "muted")


class WatchLevel(Model):
    """A user's watch level on a question or a topic, when it is not the default (see qa.watch).

    ``target_id`` is a question's or a topic's id as ``kind`` says (no foreign key: neither
    is ever deleted); events.recipients reads these rows once per batch of recipients.
    """

    __tablename__ = "watch_levels"
    # Who watches one target at one level, in user id order: a topic's watchers are a
    # keyset source of a new answer's recipients (events.recipients).
    __table_args__ = (Index("ix_watch_levels_target", "kind", "target_id", "level", "user_id"),)

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    target_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    level: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class PushSubscription(Model):
    """One browser's Web Push subscription (qa_notify.push): where and how to push to one device.

    ``endpoint`` is the push service's URL for that browser, unique: a browser signed in as
    someone else takes its subscription along, so no push ever reaches the previous user.
    """

    __tablename__ = "push_subscriptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    endpoint: Mapped[str] = mapped_column(String(2048), unique=True)
    # The browser's P-256 public key and auth secret, base64url as PushSubscription.toJSON() gives them.
    p256dh: Mapped[str] = mapped_column(String(100))
    auth: Mapped[str] = mapped_column(String(40))
    user_agent: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # The sign-in that subscribed (``session["sid"]``): signing out of it unsubscribes this
    # browser, so a shared browser never shows the previous user's pushes.
    session_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)

    def to_dict(self) -> dict:
        """Return the JSON form of the device (never its keys)."""
        return {
            "id": self.id,
            "endpoint_host": self.endpoint.split("/")[2] if self.endpoint.count("/") >= 2 else "",
            "user_agent": self.user_agent,
            "created_at": self.created_at.isoformat() + "Z",
            "last_used_at": self.last_used_at.isoformat() + "Z" if self.last_used_at else None,
        }
