"""A real stack for browser tests: embedded Redis, SQLite, a Celery worker, the gevent web
server, and headless Chromium driven by Playwright."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from devstack.embedded_redis import EmbeddedRedis

from ..conftest import flush_redis
from ..live import REPO, WebProcess

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "browser-pass-1"


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium: Debian's if installed, else Playwright's own if it can start."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        try:
            path = chromium_path()
            browser = (
                pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
                if path
                else pw.chromium.launch(args=CHROMIUM_ARGS)
            )
        except Exception as exc:  # no browser on this machine
            pytest.skip(f"no Chromium to drive (install Debian's chromium): {exc}")
        yield browser
        browser.close()


@contextlib.contextmanager
def running_stack(tmp: Path, **settings: str):
    """Redis + database + worker + web process (with ``settings``), stopped on leaving."""
    redis_server = None
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        redis_server = EmbeddedRedis(tmp / "valkey", persist=False).start()
        redis_url = redis_server.url
    database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{tmp / 'browser.sqlite'}"
    # Short heartbeats: closed tabs are noticed fast, so stream counts settle quickly.
    web = WebProcess(database_url, redis_url, SSE_HEARTBEAT_SECONDS="0.5", **settings)
    env = web.env
    if os.environ.get("DATABASE_URL"):
        subprocess.run([sys.executable, "-c", _RESET_SCHEMA], cwd=REPO, env=env, check=True)
    subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "init-db"], cwd=REPO, env=env, check=True, capture_output=True
    )

    flush_redis(redis_url)
    worker = subprocess.Popen(
        [sys.executable, str(REPO / "manage.py"), "worker", "-c", "1", "--loglevel", "warning"], cwd=REPO, env=env
    )
    web.start()
    try:
        yield web
    finally:
        web.stop()
        worker.terminate()
        worker.wait(15)
        if redis_server:
            redis_server.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Redis + database + worker + web process, shared by a module's tests."""
    with running_stack(tmp_path_factory.mktemp("stack")) as web:
        yield web


# The browser tests migrate a real database; on an external one start from an empty schema.
_RESET_SCHEMA = """
from qa_notify import create_app
from qa_notify.extensions import db
from sqlalchemy import text
app = create_app()
with app.app_context():
    db.drop_all()
    with db.engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
"""


class Member:
    """A registered user with an API client (for acting) and helpers for browser contexts."""

    def __init__(self, stack: WebProcess, username: str, role: str = "user") -> None:
        self.stack = stack
        self.username = username
        if role != "user":
            subprocess.run(
                [
                    sys.executable,
                    str(REPO / "manage.py"),
                    "create-user",
                    username,
                    "--role",
                    role,
                    "--password",
                    PASSWORD,
                ],
                cwd=REPO,
                env=stack.env,
                check=True,
                capture_output=True,
            )
            self.api = stack.client(username, PASSWORD)
        else:
            self.api = httpx.Client(base_url=stack.url, timeout=10)
            token = self.api.get("/api/csrf").json()["csrf_token"]
            resp = self.api.post(
                "/api/register", json={"username": username, "password": PASSWORD}, headers={"X-CSRFToken": token}
            )
            assert resp.status_code == 201, resp.text
            self.api.headers["X-CSRFToken"] = self.api.get("/api/csrf").json()["csrf_token"]
        self.id = self.api.get("/api/me").json()["id"]

    def browser_context(self, browser):
        """A new browser (cookie jar, storage, tabs) logged in as this member."""
        context = browser.new_context(base_url=self.stack.url)
        token = context.request.get("/api/csrf").json()["csrf_token"]
        resp = context.request.post(
            "/api/login", data={"username": self.username, "password": PASSWORD}, headers={"X-CSRFToken": token}
        )
        assert resp.status == 200, resp.text()
        return context


_names = itertools.count(1)


@pytest.fixture
def member(stack):
    """Create members with unique names: ``member("ann")`` -> ann1, ann7, ..."""

    def make(name: str, role: str = "user") -> Member:
        return Member(stack, f"{name}{next(_names)}", role)

    return make


# ---- what the tests do in a page -------------------------------------------------------


def open_tab(context, path: str = "/"):
    """Open ``path`` in a new tab of ``context`` and wait until its live status says "live"."""
    page = context.new_page()
    page.goto(path)
    page.wait_for_selector('#live-status[data-state="live"]', timeout=10_000)
    return page


def wait_for_streams(stack, n: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while stack.metric("qa_notify_open_streams") != n:
        assert time.monotonic() < deadline, f"expected {n} open streams, have {stack.metric('qa_notify_open_streams')}"
        time.sleep(0.1)


def wait_until(condition, timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``condition()`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def wait_for_badge(page, count: int, timeout: int = 3_000) -> None:
    """Wait until the unread badge says ``count`` (a zero badge is hidden, so not "visible")."""
    page.wait_for_selector(f'#unread-badge[data-count="{count}"]', state="attached", timeout=timeout)


def ask(member, title: str, body: str = "details") -> int:
    resp = member.api.post("/api/questions", json={"title": title, "body": body})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def answer(member, question_id: int, body: str) -> None:
    resp = member.api.post(f"/api/questions/{question_id}/answers", json={"body": body})
    assert resp.status_code == 201, resp.text


def produce(stack, envelope: dict) -> None:
    """Append ``envelope`` to ``qa:ingest`` as another service would, and have the worker read it now.

    (In a deployment the worker with ``--beat`` reads the stream every second.)
    """
    from celery import Celery

    from qa_notify.events.channels import INGEST_STREAM
    from qa_notify.events.connections import make_client

    make_client(stack.env["REDIS_URL"]).xadd(INGEST_STREAM, {"envelope": json.dumps(envelope)})
    celery = Celery(broker=stack.env["CELERY_BROKER_URL"])
    try:
        celery.send_task("workers.ingest_external", queue=stack.env.get("CELERY_TASK_QUEUE", "celery"))
    finally:
        celery.close()
