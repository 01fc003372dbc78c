"""Settings for qa_notify: one class per environment, every value overridable from the environment."""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
INSTANCE_DIR = BASE_DIR / "instance"
DEFAULT_SECRET_KEY = "dev-insecure-change-me"


def _env_int(name: str, default: int) -> int:
    """Read an integer setting from the environment, falling back to ``default``."""
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def _env_float(name: str, default: float) -> float:
    """Read a float setting from the environment, falling back to ``default``."""
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


def _env_bool(name: str, default: bool) -> bool:
    """Read a yes/no setting from the environment (1/true/yes/on), falling back to ``default``."""
    raw = os.environ.get(name)
    return raw.strip().lower() in ("1", "true", "yes", "on") if raw not in (None, "") else default


def database_url(url: str) -> str:
    """Normalise ``postgres://`` and ``postgresql://`` URLs to the psycopg 3 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


class Config:
    """Settings shared by every environment."""

    SECRET_KEY = os.environ.get("SECRET_KEY", DEFAULT_SECRET_KEY)
    SQLALCHEMY_DATABASE_URI = database_url(
        os.environ.get("DATABASE_URL") or f"sqlite:///{INSTANCE_DIR / 'qa_notify.sqlite'}"
    )
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}
    # None means "start a private Redis-compatible server" (see devstack.embedded_redis).
    REDIS_URL = os.environ.get("REDIS_URL") or None
    # With replicas (a Redis Cluster, or a server with a replica for failover): after each
    # batch of pushes, wait until this many replicas hold them (WAIT), at most
    # REDIS_WAIT_TIMEOUT_MS, so a master killed right after a delivery cannot take the
    # events out of the users' replay streams. 0 (the default) does not wait.
    REDIS_WAIT_REPLICAS = _env_int("REDIS_WAIT_REPLICAS", 0)
    REDIS_WAIT_TIMEOUT_MS = _env_int("REDIS_WAIT_TIMEOUT_MS", 100)
    CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or None
    CELERY_ALWAYS_EAGER = False
    # The broker queue the tasks go through (several deployments can share one RabbitMQ).
    CELERY_TASK_QUEUE = os.environ.get("CELERY_TASK_QUEUE", "celery")
    # Every process (web, worker, run) logs to stderr at this level, as ``text`` (timestamp,
    # level, logger, pid, request id) or ``json`` (one object per line); see qa_notify.logs.
    LOG_LEVEL = os.environ.get("LOG_LEVEL") or "INFO"
    LOG_FORMAT = os.environ.get("LOG_FORMAT") or "text"

    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = os.environ.get("SESSION_COOKIE_SECURE", "0") == "1"
    # "Keep me signed in" = a session cookie that lasts this long (default 30 days); a
    # logged-out session id is refused for as long (see qa_notify.auth.service).
    PERMANENT_SESSION_LIFETIME = _env_int("PERMANENT_SESSION_LIFETIME", 30 * 24 * 3600)
    MAX_CONTENT_LENGTH = _env_int("MAX_CONTENT_LENGTH", 256 * 1024)
    WTF_CSRF_TIME_LIMIT = None
    WTF_CSRF_HEADERS = ["X-CSRFToken", "X-CSRF-Token"]

    # Rate limits (Flask-Limiter syntax), counted in Redis across web processes.
    # On in production; off on a laptop and in tests unless RATELIMIT_ENABLED=1.
    RATELIMIT_ENABLED = os.environ.get("RATELIMIT_ENABLED", "0") == "1"
    LOGIN_RATE_LIMIT = os.environ.get("LOGIN_RATE_LIMIT", "10 per minute")
    REGISTER_RATE_LIMIT = os.environ.get("REGISTER_RATE_LIMIT", "5 per minute")
    POST_RATE_LIMIT = os.environ.get("POST_RATE_LIMIT", "30 per minute")

    # Notification delivery.
    SSE_RETRY_MS = _env_int("SSE_RETRY_MS", 2000)
    # Each stream's retry hint adds a random 0..SSE_RETRY_JITTER_MS, so the browsers of a
    # restarted process come back spread over a few seconds instead of in one storm.
    SSE_RETRY_JITTER_MS = _env_int("SSE_RETRY_JITTER_MS", 3000)
    SSE_HEARTBEAT_SECONDS = _env_float("SSE_HEARTBEAT_SECONDS", 15.0)
    SSE_MAX_STREAMS_PER_USER = _env_int("SSE_MAX_STREAMS_PER_USER", 10)
    SSE_BUFFER_SIZE = _env_int("SSE_BUFFER_SIZE", 256)
    # Streams being opened at once in one web process (session, user, lease, subscription);
    # at this many the server stops accepting connections until one is open: a reconnect
    # storm waits in the kernel's accept queue instead of queueing work in the process.
    SSE_MAX_OPENING = _env_int("SSE_MAX_OPENING", 200)
    # A stream's claim on the per-user quota lapses this long after its process stops renewing it.
    SSE_LEASE_SECONDS = _env_float("SSE_LEASE_SECONDS", 60.0)
    USER_STREAM_MAXLEN = _env_int("USER_STREAM_MAXLEN", 1000)
    USER_STREAM_TTL_SECONDS = _env_int("USER_STREAM_TTL_SECONDS", 7 * 24 * 3600)
    FANOUT_BATCH_SIZE = _env_int("FANOUT_BATCH_SIZE", 2000)
    # A split fan-out with no batch finished for this long is redone by the relay.
    FANOUT_STALL_SECONDS = _env_int("FANOUT_STALL_SECONDS", 120)
    # Outbox rows a drain takes at once (see qa_notify.events.drain), and how long its claim on
    # them holds: after that (its worker died, say) other drains and the relay take them.
    OUTBOX_DRAIN_ROWS = _env_int("OUTBOX_DRAIN_ROWS", 200)
    OUTBOX_CLAIM_SECONDS = _env_int("OUTBOX_CLAIM_SECONDS", 30)
    # How long a drain that found nothing waits for the next commit to ring it before it ends:
    # while answers keep coming, one task takes them all (no task per answer). 0: end at once
    # (what eager tests get, where the drain runs inside the request).
    OUTBOX_DRAIN_LINGER_SECONDS = _env_float("OUTBOX_DRAIN_LINGER_SECONDS", 1.0)
    # A task whose worker died is given to another worker after this long.
    CELERY_VISIBILITY_TIMEOUT = _env_int("CELERY_VISIBILITY_TIMEOUT", 300)
    OUTBOX_RELAY_SECONDS = _env_float("OUTBOX_RELAY_SECONDS", 5.0)
    OUTBOX_RELAY_AGE_SECONDS = _env_float("OUTBOX_RELAY_AGE_SECONDS", 10.0)
    # An outbox event whose fan-out raised (not a passing outage) this many times is marked
    # failed: no more automatic retries, listed on the admin page and counted on /metrics.
    OUTBOX_MAX_FAILURES = _env_int("OUTBOX_MAX_FAILURES", 5)
    INGEST_POLL_SECONDS = _env_float("INGEST_POLL_SECONDS", 1.0)
    # An ingest entry read this many times without being settled (its worker died, or an
    # outage each time) is dead-lettered instead of tried again.
    INGEST_MAX_DELIVERIES = _env_int("INGEST_MAX_DELIVERIES", 5)
    # Every event from qa:ingest carries this as its payload's ``source``; the page shows it.
    INGEST_SOURCE = os.environ.get("INGEST_SOURCE", "external")
    # Built-in types (new_question, new_answers, broadcast) producers may send, comma-separated;
    # none by default, so another service cannot pass for the site or an admin.
    INGEST_BUILTIN_TYPES = tuple(t for t in os.environ.get("INGEST_BUILTIN_TYPES", "").replace(" ", "").split(",") if t)
    LONG_POLL_MAX_SECONDS = _env_float("LONG_POLL_MAX_SECONDS", 30.0)
    # How many proxies (nginx) stand in front and set X-Forwarded-For/-Proto; 0 trusts none.
    PROXY_COUNT = _env_int("PROXY_COUNT", 0)
    # manage.py web: a connection must send its request line and headers within this long
    # (also the idle limit between keep-alive requests), and at most this many connections
    # may be waiting for theirs at once; more are closed at once (slowloris).
    WEB_HEADER_TIMEOUT_SECONDS = _env_float("WEB_HEADER_TIMEOUT_SECONDS", 10.0)
    WEB_MAX_PENDING_CONNECTIONS = _env_int("WEB_MAX_PENDING_CONNECTIONS", 1000)
    # manage.py web on SIGTERM: streams end at once (with a reconnect hint), /readyz and new
    # streams answer 503, and the port stays open this long before the server stops.
    WEB_DRAIN_SECONDS = _env_float("WEB_DRAIN_SECONDS", 3.0)
    BROADCAST_MAX_LENGTH = _env_int("BROADCAST_MAX_LENGTH", 1000)

    # Email (qa_notify.mail). No MAIL_SERVER: every message is written as an .eml file under
    # instance/mail/ and its path logged (what `make run` does). MAIL_SERVER and MAIL_PORT are
    # kept as typed and checked when an email is due, so a typo is one clear log line and the
    # emails wait, never a site or a worker that fails to start.
    MAIL_SERVER = os.environ.get("MAIL_SERVER") or None
    MAIL_PORT = os.environ.get("MAIL_PORT") or "587"
    MAIL_USE_TLS = _env_bool("MAIL_USE_TLS", True)
    MAIL_USE_SSL = _env_bool("MAIL_USE_SSL", False)
    MAIL_USERNAME = os.environ.get("MAIL_USERNAME") or None
    MAIL_PASSWORD = os.environ.get("MAIL_PASSWORD") or None
    MAIL_DEFAULT_SENDER = os.environ.get("MAIL_DEFAULT_SENDER", "qa_notify <noreply@localhost>")
    # Seconds for the SMTP connection and each command: a server that stops answering can
    # hold one worker slot this long, never forever.
    MAIL_TIMEOUT = _env_float("MAIL_TIMEOUT", 10.0)
    MAIL_FILE_DIR = os.environ.get("MAIL_FILE_DIR") or str(INSTANCE_DIR / "mail")
    # "When I'm away": a notification unread and seen by no open stream this long is emailed.
    EMAIL_AWAY_SECONDS = _env_int("EMAIL_AWAY_SECONDS", 600)
    # At most one away email per user this often; everything pending goes in the next one.
    EMAIL_MIN_INTERVAL = _env_int("EMAIL_MIN_INTERVAL", 3600)
    # The daily digest goes out at this hour (UTC).
    EMAIL_DIGEST_HOUR = _env_int("EMAIL_DIGEST_HOUR", 7)
    # How often the beat looks for users to email (and for emails to retry).
    EMAIL_SCAN_SECONDS = _env_float("EMAIL_SCAN_SECONDS", 60.0)
    # An email still "sending" after this long (its worker died mid-send) is marked abandoned.
    EMAIL_SENDING_GRACE_SECONDS = _env_int("EMAIL_SENDING_GRACE_SECONDS", 900)
    # How long an unsubscribe link works.
    EMAIL_UNSUBSCRIBE_MAX_AGE = _env_int("EMAIL_UNSUBSCRIBE_MAX_AGE", 30 * 24 * 3600)
    # How long the link that confirms a new address works.
    EMAIL_CONFIRM_MAX_AGE = _env_int("EMAIL_CONFIRM_MAX_AGE", 2 * 24 * 3600)
    # Absolute base of every link in an email (emails are read outside the site).
    SITE_URL = os.environ.get("SITE_URL", "http://127.0.0.1:5000").rstrip("/")
    # Inbox retention (notifications.retention): notifications read more than this many days
    # ago are deleted by the beat every INBOX_RETENTION_SECONDS, INBOX_RETENTION_BATCH ids per
    # DELETE (each committed on its own), at most INBOX_RETENTION_MAX_BATCHES per run; unread
    # ones are kept.
    INBOX_RETENTION_DAYS = _env_int("INBOX_RETENTION_DAYS", 90)
    INBOX_RETENTION_BATCH = _env_int("INBOX_RETENTION_BATCH", 5000)
    INBOX_RETENTION_MAX_BATCHES = _env_int("INBOX_RETENTION_MAX_BATCHES", 100)
    INBOX_RETENTION_SECONDS = _env_float("INBOX_RETENTION_SECONDS", 3600.0)


class DevelopmentConfig(Config):
    """Laptop defaults: SQLite under ``instance/`` and an embedded Redis."""

    ENV_NAME = "development"
    DEBUG = False


class TestingConfig(Config):
    """Settings for the test suite: CSRF on, tasks run in-process unless a test says otherwise."""

    ENV_NAME = "testing"
    TESTING = True
    SQLALCHEMY_DATABASE_URI = database_url(os.environ.get("DATABASE_URL") or "sqlite://")
    CELERY_ALWAYS_EAGER = True


class ProductionConfig(Config):
    """Production: external PostgreSQL and Redis, secure cookies, a real secret."""

    ENV_NAME = "production"
    RATELIMIT_ENABLED = os.environ.get("RATELIMIT_ENABLED", "1") == "1"
    SESSION_COOKIE_SECURE = os.environ.get("SESSION_COOKIE_SECURE", "1") == "1"


CONFIGS: dict[str, type[Config]] = {
    "development": DevelopmentConfig,
    "testing": TestingConfig,
    "production": ProductionConfig,
}


def config_for(name: str | None = None) -> type[Config]:
    """Return the settings class for ``name`` (default: ``QA_NOTIFY_ENV`` or development)."""
    name = name or os.environ.get("QA_NOTIFY_ENV", "development")
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown environment {name!r}; choose one of {sorted(CONFIGS)}") from None
