"""manage.py, driven the way an operator would: as a subprocess with environment variables."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, inspect

from .live import REPO


@pytest.fixture
def cli(tmp_path, redis_url):
    """Run ``manage.py`` against a fresh SQLite file (migrated with init-db)."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite'}",
        "REDIS_URL": redis_url,
        "SECRET_KEY": "cli",
    }

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, str(REPO / "manage.py"), *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if ok:
            assert proc.returncode == 0, proc.stderr
        return proc

    run("init-db")
    run.database_url = env["DATABASE_URL"]
    return run


def test_init_db_creates_the_schema_the_models_describe(cli):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from qa_notify.extensions import db

    engine = create_engine(cli.database_url)
    assert {"users", "questions", "answers", "notifications", "outbox_events"} <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
    assert diff == [], f"migrations and models disagree: {diff}"
    assert "up to date" in cli("init-db").stdout  # running it again is harmless


def test_create_user_notify_and_broadcast(cli):
    assert "created ann (admin)" in cli("create-user", "ann", "--role", "admin", "--password", "long-enough-1").stdout
    assert "username is taken" in cli("create-user", "ann", "--password", "long-enough-1", ok=False).stderr
    assert "queued event" in cli("notify", "ann", "deploy", '{"text": "v2"}').stdout
    bad = cli("notify", "ann", "deploy", "{not json", ok=False)
    assert bad.returncode != 0 and "payload is not JSON" in bad.stderr
    assert "no such user" in cli("notify", "nobody", "deploy", "{}", ok=False).stderr
    assert "queued for moderator" in cli("broadcast", "Hello mods", "--role", "moderator").stdout
    assert cli("broadcast", "", ok=False).returncode != 0


def test_seed_demo_prints_logins_once(cli):
    out = cli("seed-demo").stdout
    assert "alice (admin)" in out and "demo-pass-123" in out
    assert "already has users" in cli("seed-demo").stdout
