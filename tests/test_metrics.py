"""``/metrics`` as an operator reads it: figures that add up over a machine's processes,
delivery timings, and delivery counts from the database and Redis."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from qa_notify.extensions import db
from qa_notify.metrics import instruments, machine
from qa_notify.models import OutboxEvent, User, utcnow

from .live import WebProcess, read_events


def scrape(text: str) -> dict[str, dict[tuple, float]]:
    """Parse Prometheus text: sample name -> {sorted label pairs: value}."""
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def total(samples: dict, name: str) -> float:
    return sum(samples.get(name, {}).values())


def local(api) -> dict:
    return scrape(api.get("/metrics").get_data(as_text=True))


# -- one process (the test's own app, figures in memory) ---------------------------------


def test_metrics_is_prometheus_text_with_the_delivery_counts(app, api):
    resp = api.get("/metrics")
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = scrape(resp.get_data(as_text=True))
    for name in (
        "qa_notify_outbox_undelivered",
        "qa_notify_outbox_oldest_age_seconds",
        "qa_notify_outbox_failed",
        "qa_notify_emails_sending",
        "qa_notify_emails_retrying",
        "qa_notify_emails_abandoned",
        "qa_notify_ingest_dead_letters",
        "qa_notify_outbox_to_redis_seconds_count",
        "qa_notify_redis_to_stream_seconds_bucket",
        "qa_notify_fanout_seconds_sum",
        "qa_notify_relay_lag_seconds_count",
        "qa_notify_email_send_seconds_count",
        "qa_notify_events_pushed_total",
        "qa_notify_slow_consumers_total",
    ):
        assert name in samples, name
    assert total(samples, "qa_notify_outbox_undelivered") == 0
    assert total(samples, "qa_notify_outbox_oldest_age_seconds") == 0


def test_an_answer_is_timed_from_its_outbox_row_to_redis_and_counted_per_follower(app, login_as):
    asker, bob, carol = login_as("ann"), login_as("bob"), login_as("carol")
    qid = asker.post("/api/questions", {"title": "Timed?"}).get_json()["id"]
    assert carol.post(f"/api/questions/{qid}/follow").status_code == 200
    before = local(asker)
    assert bob.post(f"/api/questions/{qid}/answers", {"body": "yes"}).status_code == 201  # fanned out at once
    after = local(asker)
    assert (
        total(after, "qa_notify_outbox_to_redis_seconds_count")
        == total(before, "qa_notify_outbox_to_redis_seconds_count") + 1
    )  # one batch: ann and carol
    assert total(after, "qa_notify_events_pushed_total") == total(before, "qa_notify_events_pushed_total") + 2
    assert total(after, "qa_notify_fanout_seconds_count") == total(before, "qa_notify_fanout_seconds_count") + 1
    took = total(after, "qa_notify_outbox_to_redis_seconds_sum") - total(
        before, "qa_notify_outbox_to_redis_seconds_sum"
    )
    assert 0 <= took < 5


def test_relay_lag_is_the_age_of_the_rows_it_re_enqueues_and_the_backlog_shows_its_oldest(app, api):
    with app.app_context():  # as if the broker had been away at commit: a row nobody enqueued
        db.session.add(
            OutboxEvent(
                event_type="broadcast",
                payload={"message": "late"},
                audience={"kind": "users", "user_ids": []},
                created_at=utcnow() - timedelta(seconds=120),
            )
        )
        db.session.commit()
    waiting = local(api)
    assert total(waiting, "qa_notify_outbox_undelivered") == 1
    assert 120 <= total(waiting, "qa_notify_outbox_oldest_age_seconds") < 180
    with app.app_context():
        assert app.extensions["celery"].tasks["workers.relay_outbox"].apply().get() == 1
    relayed = local(api)
    assert (
        total(relayed, "qa_notify_relay_lag_seconds_count") == total(waiting, "qa_notify_relay_lag_seconds_count") + 1
    )
    lag = total(relayed, "qa_notify_relay_lag_seconds_sum") - total(waiting, "qa_notify_relay_lag_seconds_sum")
    assert 120 <= lag < 180
    assert total(relayed, "qa_notify_outbox_undelivered") == 0  # delivered (eagerly) once relayed
    assert total(relayed, "qa_notify_outbox_oldest_age_seconds") == 0


def test_emails_waiting_for_a_retry_are_counted(app, api, make_user):
    user = make_user("ann")
    with app.app_context():
        db.session.get(User, user.id).email_retry_at = utcnow() + timedelta(minutes=5)
        db.session.commit()
    assert total(local(api), "qa_notify_emails_retrying") == 1


def test_bulk_observations_reach_the_histogram_exactly_as_single_ones():
    """The stream's latency histogram is fed in bulk through prometheus_client's internals:
    the result must be what ``observe`` gives, value for value."""
    values = [0.0, 0.004, 0.005, 0.0051, 0.3, 0.5, 2, 61, 1e6]
    registries = CollectorRegistry(), CollectorRegistry()
    one = Histogram("t_seconds", "t", buckets=instruments.LATENCY_BUCKETS, registry=registries[0])
    bulk = Histogram("t_seconds", "t", buckets=instruments.LATENCY_BUCKETS, registry=registries[1])
    gather = instruments.BulkHistogram(bulk)
    now_ms = time.time() * 1000
    for value in values:
        one.observe(value)
        gather.observe(value)
    gather.observe_since_ms(now_ms + 60_000)  # from the future (clock skew): counted as 0 s
    one.observe(0)
    gather.flush()

    def samples(registry):
        return {(s.name, tuple(s.labels.items())): s.value for f in registry.collect() for s in f.samples}

    assert samples(registries[1]) == samples(registries[0])


# -- a machine of several processes ------------------------------------------------------


def _open_stream(web: WebProcess, username: str, opened: threading.Event, stop: threading.Event) -> None:
    client = web.client(username)
    try:
        read_events(client, 1000, timeout=60, opened=opened)  # open until its process ends
    except (httpx.HTTPError, RuntimeError):
        pass  # the process was killed, or the test closed it
    finally:
        stop.set()


def _streams(web: WebProcess, username: str, n: int) -> list[threading.Event]:
    done = []
    for _ in range(n):
        opened, stop = threading.Event(), threading.Event()
        threading.Thread(target=_open_stream, args=(web, username, opened, stop), daemon=True).start()
        assert opened.wait(10), "stream did not open"
        done.append(stop)
    return done


def _wait_for(web: WebProcess, condition, what: str, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(httpx.get(web.url + "/metrics").text)
        if condition(samples):
            return samples
        assert time.monotonic() < deadline, f"{what}: {samples.get('qa_notify_open_streams')}"
        time.sleep(0.1)


def _by_pid(samples: dict, name: str = "qa_notify_open_streams") -> dict[str, float]:
    return {dict(labels)["pid"]: value for labels, value in samples.get(name, {}).items()}


def test_any_web_process_answers_for_the_whole_machine_and_a_killed_one_stops_counting(
    app, login_as, redis_url, database_url, tmp_path
):
    shared = str(tmp_path / "metrics")
    asker = login_as("ann")
    login_as("bob")
    a = WebProcess(database_url, redis_url, PROMETHEUS_MULTIPROC_DIR=shared).start()
    b = WebProcess(database_url, redis_url, PROMETHEUS_MULTIPROC_DIR=shared).start()
    c = None
    try:
        pid_a, pid_b = str(a.process.pid), str(b.process.pid)
        # Fresh processes report zero streams each, before any stream opened.
        _wait_for(a, lambda s: _by_pid(s) == {pid_a: 0, pid_b: 0}, "both processes at zero")
        _streams(a, "ann", 2)
        _streams(b, "bob", 1)
        for web in (a, b):  # either one gives the machine: each process, and the sum
            samples = _wait_for(web, lambda s: _by_pid(s) == {pid_a: 2, pid_b: 1}, "2 + 1 streams")
            assert total(samples, "qa_notify_stream_users") == 2

        # An event reaches ann's two streams on a: timed there, seen from b.
        qid = asker.post("/api/questions", {"title": "Machine?"}).get_json()["id"]
        login_as("dave").post(f"/api/questions/{qid}/answers", {"body": "all of it"})
        _wait_for(b, lambda s: total(s, "qa_notify_redis_to_stream_seconds_count") == 2, "two streams timed")

        os.kill(b.process.pid, signal.SIGKILL)  # no goodbye: its files stay behind
        b.process.wait()
        samples = _wait_for(a, lambda s: _by_pid(s) == {pid_a: 2}, "b's streams gone with it")
        assert total(samples, "qa_notify_stream_users") == 1

        # A process killed for good leaves its counters behind, folded when one starts.
        a.stop()
        gauges = [p.name for p in Path(shared).glob("gauge_*.db")]
        assert not [g for g in gauges if g.endswith(f"_{pid_a}.db")], "a graceful exit removes its gauges"
        c = WebProcess(database_url, redis_url, PROMETHEUS_MULTIPROC_DIR=shared).start()
        samples = _wait_for(c, lambda s: _by_pid(s) == {str(c.process.pid): 0}, "only c is alive")
        assert total(samples, "qa_notify_redis_to_stream_seconds_count") == 2, "a's timings still count"
        left = {p.name for p in Path(shared).glob("*.db")}
        assert not [n for n in left if n.endswith((f"_{pid_a}.db", f"_{pid_b}.db"))], left
        assert "histogram_archive.db" in left
    finally:
        for web in (a, b, c):
            if web is not None:
                web.stop()


def test_join_names_a_default_directory_for_the_children_and_a_fresh_run_starts_empty(tmp_path, monkeypatch):
    monkeypatch.delenv(machine.ENV, raising=False)
    path = tmp_path / "metrics"
    path.mkdir()
    (path / "counter_999999999.db").write_bytes(b"")  # an earlier run's
    assert machine.join(path, fresh=True) == path
    assert os.environ[machine.ENV] == str(path) and not list(path.glob("*.db"))
    # A dead process's open streams under the pid this process now has are not its own.
    stale = path / f"gauge_liveall_{os.getpid()}.db"
    stale.write_bytes(b"")
    machine.join(path)
    assert not stale.exists()
    monkeypatch.setenv(machine.ENV, str(tmp_path / "given"))
    assert machine.join(path) == tmp_path / "given"  # an operator's choice wins


@pytest.fixture(autouse=True)
def _no_directory_left_set(monkeypatch):
    """``join`` sets the variable for child processes; a test must not leave it to the others."""
    monkeypatch.setenv(machine.ENV, "")
    monkeypatch.delenv(machine.ENV)


def test_a_command_runs_with_a_metrics_directory_that_does_not_exist_yet(tmp_path, database_url):
    """Every process may record (init-db included), not only the web and worker processes that
    join the machine's directory: a named directory is created, not a FileNotFoundError."""
    import subprocess
    import sys

    from .live import REPO

    metrics_dir = tmp_path / "not" / "yet" / "metrics"
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.sqlite'}",
        "SECRET_KEY": "test-secret",
    }
    done = subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "init-db"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert metrics_dir.is_dir()
