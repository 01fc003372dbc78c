"""Logs: request ids, the access line, LOG_LEVEL / LOG_FORMAT, and real processes logging JSON."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from qa_notify.logs import RequestIdFilter

from .live import REPO, WebProcess, broker_for, free_port

GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("nginx-4f1c.9_A", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("two words", False),
        ("a/b", False),
        ("", False),
        (None, False),
    ],
)
def test_a_well_formed_request_id_comes_back_and_anything_else_is_replaced(api, sent, kept):
    headers = {} if sent is None else {"X-Request-ID": sent}
    returned = api.get("/api/csrf", headers=headers).headers["X-Request-ID"]
    if kept:
        assert returned == sent
    else:
        assert GENERATED.fullmatch(returned), returned


def test_each_request_without_an_id_gets_its_own(api):
    ids = {api.get("/api/csrf").headers["X-Request-ID"] for _ in range(3)}
    assert len(ids) == 3


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/me", 401),  # anonymous
        ("GET", "/api/no-such-thing", 404),
        ("POST", "/api/questions", 400),  # no CSRF token
        ("DELETE", "/api/csrf", 405),
    ],
)
def test_every_json_error_names_the_request_id(api, method, path, status):
    resp = api.client.open(path, method=method, headers={"X-Request-ID": "support-ticket-7"})
    assert resp.status_code == status
    assert resp.get_json()["request_id"] == "support-ticket-7"
    assert resp.headers["X-Request-ID"] == "support-ticket-7"


def test_a_validation_error_names_a_generated_request_id(login_as):
    ann = login_as("ann")
    resp = ann.post("/api/questions", {"title": ""})
    assert resp.status_code == 422
    assert resp.get_json()["request_id"] == resp.headers["X-Request-ID"]
    assert GENERATED.fullmatch(resp.get_json()["request_id"])


def test_the_error_page_shows_the_request_id(api):
    resp = api.get("/no-such-page", headers={"X-Request-ID": "page-id-42", "Accept": "text/html"})
    assert resp.status_code == 404
    assert "Request id: <code>page-id-42</code>" in resp.get_data(as_text=True)


def test_a_crash_is_logged_with_the_id_its_client_was_given(app, api, caplog):
    def crash():
        raise RuntimeError("the database answered in Klingon")

    app.add_url_rule("/api/crash", view_func=crash)
    caplog.handler.addFilter(RequestIdFilter())  # what every process's handler has
    resp = api.get("/api/crash")
    assert resp.status_code == 500
    given = resp.get_json()["request_id"]
    [crash_line] = [r for r in caplog.records if r.name == "qa_notify.errors"]
    assert crash_line.request_id == given
    assert "Klingon" in caplog.text  # the traceback is in the log, not in the answer
    assert "Klingon" not in resp.get_data(as_text=True)


@pytest.fixture
def behind_proxy(app_config):
    app_config["PROXY_COUNT"] = 1


def test_one_access_line_per_request_with_who_and_what_but_no_query_values(behind_proxy, login_as, caplog):
    ann = login_as("ann")
    with caplog.at_level(logging.INFO, logger="qa_notify.access"):
        resp = ann.get(
            "/api/notifications?limit=5&before=8675309",
            headers={"X-Request-ID": "inbox-1", "X-Forwarded-For": "203.0.113.7"},
        )
    assert resp.status_code == 200
    [line] = [r for r in caplog.records if r.name == "qa_notify.access" and r.request_id == "inbox-1"]
    assert (line.method, line.path, line.query_keys, line.status) == (
        "GET",
        "/api/notifications",
        ["limit", "before"],
        200,
    )
    assert line.user_id == ann.user_id
    assert line.remote_addr == "203.0.113.7"  # the client's, not the proxy's
    assert line.duration_ms >= 0
    assert "8675309" not in line.getMessage()
    assert line.getMessage().startswith("GET /api/notifications?limit&before 200 ")


@pytest.mark.parametrize(
    ("argv", "variable", "value", "error"),
    [
        (["manage.py", "web"], "LOG_FORMAT", "xml", "Error: LOG_FORMAT must be text or json, not 'xml'"),
        (
            ["manage.py", "web"],
            "LOG_LEVEL",
            "loud",
            "Error: LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, not 'loud'",
        ),
        (["manage.py", "worker"], "LOG_FORMAT", "JSON!", "Error: LOG_FORMAT must be text or json, not 'JSON!'"),
        (
            ["-m", "celery", "-A", "workers.celery_app", "worker"],
            "LOG_FORMAT",
            "xml",
            "qa_notify worker: LOG_FORMAT must be text or json, not 'xml'",
        ),
    ],
)
def test_a_bad_log_setting_is_one_clear_line_and_the_process_does_not_start(
    redis_url, database_url, argv, variable, value, error
):
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, variable: value}
    proc = subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert proc.stderr.strip() == error


def test_migrations_log_in_the_format_of_the_process(redis_url, tmp_path):
    """alembic.ini's own logging setup must not replace LOG_FORMAT (nor silence our loggers)."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.sqlite'}",
        "REDIS_URL": redis_url,
        "LOG_FORMAT": "json",
    }
    proc = subprocess.run(
        [sys.executable, "manage.py", "init-db"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "init-db.log").write_text(proc.stderr)
    lines = _json_lines(tmp_path / "init-db.log")
    assert any(line["logger"] == "alembic.runtime.migration" and "Running upgrade" in line["message"] for line in lines)


def _json_lines(path: Path) -> list[dict]:
    """Every line of a process's log, each of which must be a JSON object."""
    lines = []
    for text in path.read_text().splitlines():
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            pytest.fail(f"a log line that is not JSON: {text!r}")
    return lines


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)


def test_the_production_web_process_logs_one_json_access_line_per_request(redis_url, database_url, login_as, tmp_path):
    ann_id = login_as("ann").user_id
    log_path = tmp_path / "web.log"
    web = WebProcess(database_url, redis_url, LOG_FORMAT="json", PROXY_COUNT="1", SSE_HEARTBEAT_SECONDS="0.2")
    with log_path.open("w") as log_file:
        web.popen = {"stderr": log_file}
        web.start()
        try:
            client = web.client("ann")
            me = client.get("/api/me", headers={"X-Request-ID": "live-me-1", "X-Forwarded-For": "198.51.100.4"})
            assert me.headers["X-Request-ID"] == "live-me-1"
            heartbeats = 0
            with client.stream("GET", "/notifications", headers={"X-Request-ID": "live-stream-1"}) as stream:
                assert stream.headers["X-Request-ID"] == "live-stream-1"
                for line in stream.iter_lines():
                    heartbeats += line == ": heartbeat"
                    if heartbeats == 5:
                        break
        finally:
            web.stop()
    lines = _json_lines(log_path)
    access = [line for line in lines if line["logger"] == "qa_notify.access"]
    [me_line] = [line for line in access if line["request_id"] == "live-me-1"]
    assert me_line["method"] == "GET" and me_line["path"] == "/api/me" and me_line["status"] == 200
    assert me_line["user_id"] == ann_id
    assert me_line["remote_addr"] == "198.51.100.4"
    assert isinstance(me_line["duration_ms"], float)
    assert me_line["pid"] == web.process.pid and me_line["level"] == "INFO" and me_line["time"]
    # Five heartbeats went by; the stream is still one line, written as it opened.
    [stream_line] = [line for line in access if line["request_id"] == "live-stream-1"]
    assert stream_line["path"] == "/notifications" and stream_line["status"] == 200
    assert stream_line["user_id"] == ann_id
    assert any("listening on" in line["message"] and line["request_id"] is None for line in lines)


def test_behind_nginx_the_request_id_is_the_one_nginx_made(redis_url, database_url, tmp_path):
    """run-cluster's nginx (deploy/nginx.conf's settings) passes its $request_id; a client's own is replaced."""
    from devstack.local_cluster import nginx_binary, start_nginx

    if nginx_binary() is None:
        pytest.skip("nginx is not installed")
    log_path = tmp_path / "web.log"
    web = WebProcess(database_url, redis_url, LOG_FORMAT="json", PROXY_COUNT="1")
    with log_path.open("w") as log_file:
        web.popen = {"stderr": log_file}
        web.start()
        port = free_port()
        nginx = start_nginx(port, [web.port], tmp_path / "nginx", workers=1)
        try:
            _wait_for(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), 15, "nginx answering")
            resp = httpx.get(f"http://127.0.0.1:{port}/api/csrf", headers={"X-Request-ID": "chosen-by-client"})
        finally:
            nginx.terminate()
            nginx.wait(10)
            web.stop()
    nginx_id = resp.headers["X-Request-ID"]
    assert GENERATED.fullmatch(nginx_id), nginx_id  # nginx's $request_id: 32 hex digits
    [line] = [line for line in _json_lines(log_path) if line["request_id"] == nginx_id]
    assert line["path"] == "/api/csrf" and line["status"] == 200


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code in (200, 503)
    except httpx.HTTPError:
        return False


def test_a_celery_worker_logs_its_own_lines_as_json(redis_url, database_url, tmp_path):
    broker = broker_for(redis_url)
    if broker.startswith("memory://"):
        pytest.skip("no broker a worker could use (a Redis Cluster, and no CELERY_BROKER_URL)")
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": broker,
        "CELERY_TASK_QUEUE": f"qa-logging-test-{os.getpid()}",  # steals no other test's tasks
        "SECRET_KEY": "test-secret",
        "LOG_FORMAT": "json",
    }
    log_path, out_path = tmp_path / "worker.log", tmp_path / "worker.out"
    with log_path.open("w") as log_file, out_path.open("w") as out_file:
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "worker", "--loglevel", "info", "-P", "solo"],
            cwd=REPO,
            env=env,
            stdout=out_file,
            stderr=log_file,
            start_new_session=True,
        )
        try:
            _wait_for(lambda: " ready." in log_path.read_text(), 60, "the worker saying it is ready")
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
    lines = _json_lines(log_path)  # every line, shutdown included
    [ready] = [line for line in lines if line["message"].endswith(" ready.")]
    assert ready["logger"].startswith("celery") and ready["level"] == "INFO" and ready["pid"] == worker.pid
    assert "[queues]" not in out_path.read_text()  # no banner beside the JSON
