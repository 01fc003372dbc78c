"""The measured scenarios. Each returns a dict of figures; ``__main__`` writes them out."""

from __future__ import annotations

import queue
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import func, select

from qa_notify.events import channels
from qa_notify.extensions import db
from qa_notify.models import Notification, OutboxEvent, User

from .clients import ClientFleet
from .stack import Stack, port_of, redis_clients, rss_kb
from .users import PASSWORD, ask_as, create_admin, create_users, follow_question, session_cookies

# Streams opened per second in the broadcast and capacity scenarios: browsers arriving
# briskly, not all in the same millisecond (see docs/benchmarks.md for the storm case).
CONNECT_RATE = 1000
# Threads sending HTTP requests in the latency scenarios, each with its own client.
DRIVER_THREADS = 16


def _workdir(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"qa-bench-{name}-"))


def _evalsha_calls(r) -> int:
    stats = r.info("commandstats")
    return sum(int(stats.get(k, {}).get("calls", 0)) for k in ("cmdstat_evalsha", "cmdstat_eval"))


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def fanout(followers: int = 100_000, workers: int = 1) -> dict:
    """One answer to a question with ``followers`` followers, ``workers`` workers (-c 2 each)."""
    stack = Stack(_workdir("fanout"))
    try:
        app = stack.app()
        asker, answerer = create_users(app, 2, prefix="author")
        ids = create_users(app, followers, prefix="f")
        qid = ask_as(app, asker, "A very popular question")
        follow_question(app, ids + [asker], qid)
        for _ in range(workers):
            stack.start_worker(concurrency=2)
        r = stack.redis()
        r.config_resetstat()
        calls_before = _evalsha_calls(r)
        cpu_before = _stack_cpu_seconds(stack)
        from qa_notify.qa.service import post_answer

        with app.test_request_context():
            from qa_notify.models import Question

            question = db.session.get(Question, qid)
            started = time.monotonic()
            post_answer(db.session.get(User, answerer), question, "an answer for everyone")
        with app.app_context():
            while True:
                db.session.expire_all()
                done = db.session.scalar(
                    select(func.count()).select_from(OutboxEvent).where(OutboxEvent.delivered_at.is_not(None))
                )
                if done:
                    break
                time.sleep(0.05)
            elapsed = time.monotonic() - started
            cpu = {role: round(t - cpu_before.get(role, 0), 1) for role, t in _stack_cpu_seconds(stack).items()}
            commands = _command_usec(r)
            rows = db.session.scalar(select(func.count()).select_from(Notification))
        entries = 0
        everyone = ids + [asker]
        for start in range(0, len(everyone), 50_000):
            pipe = r.pipeline(transaction=False)
            for uid in everyone[start : start + 50_000]:
                pipe.xlen(channels.user_stream(uid))
            entries += sum(pipe.execute())
        calls = _evalsha_calls(r) - calls_before
        recipients = followers + 1
        # Each batch's Lua calls (one per partition it touches) go out as one pipeline per
        # Redis master: one round trip per batch here, on one server.
        batches = -(-recipients // app.config["FANOUT_BATCH_SIZE"])
        return {
            "recipients": recipients,
            "seconds": round(elapsed, 2),
            "recipients_per_second": round(recipients / elapsed),
            "inbox_rows": rows,
            "stream_entries": entries,
            "lua_calls": calls,
            "lua_calls_per_recipient": round(calls / recipients, 4),
            "redis_round_trips_per_recipient": round(batches / recipients, 5),
            "workers": workers,
            "cpu_seconds": cpu,
            "valkey_commands": commands,
            "target_seconds": 10 if followers <= 100_000 else 20,
        }
    finally:
        stack.close()


def small_events(count: int = 2000, questions: int = 1000, producers: int = 4) -> dict:
    """Many small events: answers to ``questions`` questions, one follower each (the asker),
    posted through the domain function the API calls (``post_answer``), one worker (-c 2).

    The answers come from ``producers`` processes at once, each a ``post_answer`` caller as a
    web process is (``bench.producers``: one app context per answer, its user and question
    read in it): production runs several web processes, and one process posting back to back
    measures that process's CPU, not the site's. Two figures: *end to end*, the producers
    post ``count`` answers while the worker runs (answers per second from the first post to
    the last row delivered); *backlog*, ``count`` answers committed before the worker starts
    (events per second from the worker's first inbox row to its last row delivered: what
    delivery alone sustains). CPU seconds per answer of the producers and of the worker
    (its pool included) are recorded with it. Tasks are counted as broker messages (kombu's
    Redis transport LPUSHes each), and every follower's inbox and stream are checked to hold
    each answer exactly once.
    """
    stack = Stack(_workdir("tasks"))
    try:
        app = stack.app()
        askers = create_users(app, questions, prefix="asker")
        answerers = create_users(app, producers, prefix="answerer")
        question_ids = []
        for uid in askers:
            question_ids.append(ask_as(app, uid, f"question of {uid}"))
            follow_question(app, [uid], question_ids[-1])
        r = stack.redis()
        backlog = _post_answers(stack, app, r, answerers, question_ids, count, "backlog")
        worker = stack.start_worker(concurrency=2)
        backlog.update(_wait_delivered(app, r, backlog))
        worker_cpu = _tree_cpu_seconds(worker.pid)
        live = _post_answers(stack, app, r, answerers, question_ids, count, "live")
        live.update(_wait_delivered(app, r, live))
        worker_cpu = _tree_cpu_seconds(worker.pid) - worker_cpu
        pipe = r.pipeline(transaction=False)
        for uid in askers:
            pipe.xlen(channels.user_stream(uid))
        entries = sum(pipe.execute())
        with app.app_context():
            inbox_rows = db.session.scalar(select(func.count()).select_from(Notification))
        end_to_end = live["last_delivered"] - live["first_post"]
        drained = backlog["last_delivered"] - backlog["first_inbox_row"]
        return {
            "answers": count,
            "followers_per_answer": 1,
            "producers": producers,
            "producer": f"post_answer (the API's domain function) from {producers} processes, an app context per answer",
            "end_to_end_seconds": round(end_to_end, 3),
            "answers_per_second": round(count / end_to_end),
            "posting_seconds": round(live["last_post"], 3),
            "posted_per_second": round(count / live["last_post"]),
            "lag_after_last_post_ms": round((live["last_delivered"] - live["last_post"]) * 1000, 1),
            "producer_cpu_ms_per_answer": round(live["producer_cpu_seconds"] / count * 1000, 2),
            "worker_cpu_ms_per_answer": round(worker_cpu / count * 1000, 2),
            "tasks_enqueued": live["tasks"],
            "backlog_seconds": round(drained, 3),
            "backlog_events_per_second": round(count / drained),
            "backlog_tasks_enqueued": backlog["tasks"],
            "inbox_rows": inbox_rows,
            "stream_entries": entries,
            "expected": 2 * count,
            "target_answers_per_second": 1000,
        }
    finally:
        stack.close()


def _broker_messages(r) -> int:
    """Messages published to the Redis broker so far (kombu's Redis transport LPUSHes each)."""
    return int(r.info("commandstats").get("cmdstat_lpush", {}).get("calls", 0))


def _tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its children."""
    import psutil

    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return sum(t.user + t.system for t in (proc.cpu_times() for proc in procs))


def _post_answers(stack, app, r, answerers: list[int], question_ids: list[int], count: int, label: str) -> dict:
    """Post ``count`` answers round-robin over the questions through ``post_answer``, from one
    process per answerer at once (``bench.producers``)."""
    from .producers import post_in_processes

    messages = _broker_messages(r)
    with app.app_context():
        first_id = (db.session.scalar(select(func.max(OutboxEvent.id))) or 0) + 1
    posted = post_in_processes(stack, answerers, question_ids, count, label)
    started = datetime.fromtimestamp(posted["started"], UTC).replace(tzinfo=None)  # naive UTC, as the rows are
    return {
        "first_id": first_id,
        "started": started,
        "first_post": 0.0,
        "last_post": posted["finished"] - posted["started"],
        "producer_cpu_seconds": posted["cpu_seconds"],
        "messages": messages,
    }


def _wait_delivered(app, r, phase: dict, timeout: float = 600) -> dict:
    """Wait until every outbox row of the phase is delivered; return its times (seconds from
    the first post, from the worker's own timestamps) and the tasks it took."""
    first = phase["first_id"]
    _wait_outbox_delivered(app, timeout, first_id=first)
    with app.app_context():
        last = db.session.scalar(select(func.max(OutboxEvent.delivered_at)).where(OutboxEvent.id >= first))
        first_row = db.session.scalar(select(func.min(Notification.created_at)).where(Notification.outbox_id >= first))
    return {
        "last_delivered": (last - phase["started"]).total_seconds(),
        "first_inbox_row": (first_row - phase["started"]).total_seconds(),
        "tasks": _broker_messages(r) - phase["messages"],
    }


def broadcast(streams: int = 10_000, cluster: bool = False, web_processes: int = 1) -> dict:
    """An admin broadcast to ``streams`` open streams: on one web process and one Valkey, or
    spread by nginx over ``web_processes`` processes on a 3-master cluster."""
    stack = Stack(_workdir("broadcast"), cluster=cluster, SSE_HEARTBEAT_SECONDS="15")
    try:
        app = stack.app()
        ids = create_users(app, streams, prefix="m")
        admin = create_admin(app)
        before = redis_clients(stack.redis())
        url = stack.start_webs(web_processes)
        fleet = ClientFleet(port_of(url), session_cookies(app, ids), seconds=300, connect_rate=CONNECT_RATE)
        fleet.wait_ready()
        per_web = (redis_clients(stack.redis()) - before) / web_processes
        stack.start_worker(concurrency=2)
        from qa_notify.admin.service import send_broadcast

        # As in the whole-machine run: a first broadcast for a role nobody else has warms the
        # worker, so its start (seconds on a slow day) does not count as the broadcast's time.
        with app.test_request_context():
            send_broadcast(db.session.get(User, admin), "warm-up", "admin", 1000)
        _wait_outbox_delivered(app, timeout=120)
        cpu_before = _cpu_seconds(stack, fleet)
        with app.test_request_context():
            sent_at = time.time()
            send_broadcast(db.session.get(User, admin), "Maintenance at noon", None, 1000)
        deadline = time.monotonic() + 60
        while fleet.count_of("broadcast") < fleet.ready and time.monotonic() < deadline:
            time.sleep(0.05)
        cpu = {role: round(t - cpu_before.get(role, 0), 2) for role, t in _cpu_seconds(stack, fleet).items()}
        arrivals = [e["t"] - sent_at for e in fleet.events_of("broadcast")]
        fleet.close()
        return {
            "streams": streams,
            "connected": fleet.ready,
            "received": len(arrivals),
            "first_seconds": round(min(arrivals), 3) if arrivals else None,
            "median_seconds": round(statistics.median(arrivals), 3) if arrivals else None,
            "last_seconds": round(max(arrivals), 3) if arrivals else None,
            "connect_rate_per_second": CONNECT_RATE,
            "cpu_seconds_until_last": cpu,
            "target_seconds": 1.0,
            **_topology(cluster, web_processes, per_web),
        }
    finally:
        stack.close()


def _topology(cluster: bool, web_processes: int, redis_per_web: float) -> dict:
    return {
        "redis": "3-master Valkey cluster" if cluster else "one Valkey",
        "web_processes": web_processes,
        "behind_nginx": web_processes > 1,
        "redis_connections_per_web_process": round(redis_per_web, 1),
    }


def capacity(streams: int = 19_000, hold_seconds: float = 20, connect_rate: float = CONNECT_RATE) -> dict:
    """How many idle streams one web process holds, its RSS per stream and Redis connections,
    with browsers arriving at ``connect_rate`` per second."""
    stack = Stack(_workdir("capacity"), SSE_HEARTBEAT_SECONDS="5")
    try:
        app = stack.app()
        ids = create_users(app, streams, prefix="c")
        r = stack.redis()
        clients_before = redis_clients(r)
        url, web = stack.start_web()
        httpx.get(url + "/healthz")
        warm = ClientFleet(port_of(url), session_cookies(app, ids[:10]), seconds=30)
        warm.wait_ready()
        warm.close()
        time.sleep(6)
        pid = web.pid  # bash execs the web server, so this is its pid
        rss_before = rss_kb(pid)
        fleet = ClientFleet(
            port_of(url),
            session_cookies(app, ids),
            seconds=600,
            connect_rate=connect_rate,
            retry=True,  # like the site's page: a refused stream is tried again with backoff
            connect_timeout=streams / connect_rate * 2 + 120,
        )
        fleet.wait_ready(timeout=streams / connect_rate * 2 + 150)
        refused = fleet.stats()["refused"]
        time.sleep(hold_seconds)  # several heartbeats go out to every stream
        open_streams = _metric(url, "qa_notify_open_streams")
        rss_after = rss_kb(pid)
        web_redis = redis_clients(r) - clients_before
        fleet.close()
        per_stream = (rss_after - rss_before) * 1024 / max(open_streams, 1)
        return {
            "streams_requested": streams,
            "connected": fleet.ready,
            "open_after_hold": int(open_streams),
            "connect_errors": fleet.errors,
            "refused_and_retried": refused,
            "error_sample": fleet.error_samples[:2],
            "rss_before_mb": round(rss_before / 1024, 1),
            "rss_after_mb": round(rss_after / 1024, 1),
            "rss_per_stream_kb": round(per_stream / 1024, 1),
            "redis_connections_web_process": web_redis,
            "connect_rate_per_second": connect_rate,
            "targets": {"streams": 19_000, "rss_per_stream_kb": 20, "redis_connections": 4},
        }
    finally:
        stack.close()


def _metric(url: str, name: str, timeout: float = 10) -> float:
    """The sum of every sample of ``name`` (whatever its labels) that ``url``'s /metrics shows."""
    return sum(_samples(url, name, timeout).values())


def _samples(url: str, name: str, timeout: float = 10) -> dict[str, float]:
    """Every sample of ``name`` on ``url``'s /metrics, by its ``pid`` label ("" without one)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=timeout).text
    return {
        sample.labels.get("pid", ""): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


# A whole machine: the load generators connect from several loopback addresses (each source
# and destination pair has ~28k ephemeral ports) ...
SOURCES = tuple(f"127.0.0.{i}" for i in range(2, 12))
# ... and every process stays under this machine's 20,000 open files: a web process holds one
# descriptor per stream, an nginx worker two (8,000 streams each, see local_cluster.nginx_config).
# nginx reaches each web process from 127.0.0.1, one ephemeral port per stream: here it
# opened about 14,100 per web process (half of 32768-60999) before connect() failed with
# "Cannot assign requested address" (docs/deployment.md), so 90,000 streams need 7 of them.
STREAMS_PER_WEB_PROCESS = 13_500
# Load generators: few processes (each a gevent loop), so they do not crowd out the servers.
CLIENTS_PER_PROCESS = 15_000
STREAMS_PER_NGINX_WORKER = 8_000


def whole_machine(
    streams: int = 90_000, connect_rate: float = 1000, hold_seconds: float = 35, web_processes: int | None = None
) -> dict:
    """One machine as deployed: web processes (the systemd unit's command) behind nginx, a
    worker and one Valkey; ``streams`` browsers arrive at ``connect_rate`` per second, hold
    through two heartbeats, then an admin broadcast reaches all of them."""
    web_processes = web_processes or max(2, -(-streams // STREAMS_PER_WEB_PROCESS))
    nginx_workers = max(2, -(-streams // STREAMS_PER_NGINX_WORKER) + 1)
    stack = Stack(_workdir("machine"), SSE_HEARTBEAT_SECONDS="15")
    try:
        app = stack.app()
        ids = create_users(app, streams, prefix="w")
        admin = create_admin(app)
        url = stack.start_webs(web_processes, nginx_workers=nginx_workers)
        rss_before = sum(rss_kb(p.pid) for p in stack.webs)
        started = time.monotonic()
        # Browsers keep trying for this long: time for the machine to open them all at its pace
        # (about 3 ms of CPU per stream opened; 150 to 250 a second here, load generators included).
        storm_limit = max(streams / connect_rate * 3, streams / 120) + 120
        fleet = ClientFleet(
            port_of(url),
            session_cookies(app, ids),
            seconds=3600,
            connect_rate=connect_rate,
            sources=SOURCES,
            retry=True,  # like the site's page: a refused stream is tried again with backoff
            connect_timeout=storm_limit,
            per_process=CLIENTS_PER_PROCESS,
            nice=10,  # the browsers would be on other machines: the servers come first here
        )
        fleet.wait_ready(timeout=storm_limit + 30)
        connect_seconds = time.monotonic() - started
        after_storm = fleet.stats()
        time.sleep(hold_seconds)  # two heartbeats (every 15 s) reach every stream
        held = fleet.stats()
        scrape_started = time.monotonic()
        # The machine's metrics from one web process directly (any of them answers for all: one
        # series per process), not through nginx, whose own connections upstream may be what ran out.
        per_process = _samples(f"http://127.0.0.1:{stack.web_ports[0]}", "qa_notify_open_streams")
        scrape_seconds = time.monotonic() - scrape_started
        open_now = int(sum(per_process.values()))
        rss_after = sum(rss_kb(p.pid) for p in stack.webs)
        nginx_rss = _tree_rss_kb(stack.nginx.pid)
        stack.start_worker(concurrency=2)
        from qa_notify.admin.service import send_broadcast

        # A first broadcast for a role nobody else has (the admin sends it, and is left out)
        # warms the worker: its start must not count as the broadcast's time.
        with app.test_request_context():
            send_broadcast(db.session.get(User, admin), "warm-up", "admin", 1000)
        _wait_outbox_delivered(app, timeout=120)
        cpu_before = _cpu_seconds(stack, fleet)
        with app.test_request_context():
            sent_at = time.time()
            send_broadcast(db.session.get(User, admin), "Maintenance at noon", None, 1000)
        deadline = time.monotonic() + 120
        while fleet.count_of("broadcast") < open_now and time.monotonic() < deadline:
            time.sleep(0.1)
        cpu = {role: round(t - cpu_before.get(role, 0), 2) for role, t in _cpu_seconds(stack, fleet).items()}
        arrivals = sorted(e["t"] - sent_at for e in fleet.events_of("broadcast"))
        fleet.close()
        return {
            "streams_requested": streams,
            "web_processes": web_processes,
            "nginx_workers": nginx_workers,
            "connect_rate_per_second": connect_rate,
            "connected": fleet.ready,
            "connect_errors": fleet.errors,
            "error_sample": fleet.error_samples[:3],
            "connect_seconds": round(connect_seconds, 1),
            "open_after_hold_clients": held["open"],
            "open_streams_metrics_per_process": sorted(int(v) for v in per_process.values()),
            "open_streams_metrics_total": open_now,
            "metrics_scrape_seconds": round(scrape_seconds, 2),
            "refused_and_retried_during_storm": after_storm["refused"],
            "refused_after_storm": held["refused"] - after_storm["refused"],
            "closed_by_server_during_hold": after_storm["open"] - held["open"],
            "heartbeats_during_hold": held["heartbeats"] - after_storm["heartbeats"],
            "heartbeats_per_stream_during_hold": round(
                (held["heartbeats"] - after_storm["heartbeats"]) / max(open_now, 1), 2
            ),
            "web_rss_mb": round(rss_after / 1024, 1),
            "web_rss_per_stream_kb": round((rss_after - rss_before) / max(open_now, 1), 1),
            "nginx_rss_per_stream_kb": round(nginx_rss / max(open_now, 1), 1),
            "nginx_rss_mb": round(nginx_rss / 1024, 1),
            "broadcast_received": len(arrivals),
            "broadcast_first_seconds": round(arrivals[0], 3) if arrivals else None,
            "broadcast_median_seconds": round(statistics.median(arrivals), 3) if arrivals else None,
            "broadcast_p99_seconds": round(arrivals[int(len(arrivals) * 0.99) - 1], 3) if arrivals else None,
            "broadcast_last_seconds": round(arrivals[-1], 3) if arrivals else None,
            "broadcast_cpu_seconds": cpu,  # by role, from the send until the last arrival
            "targets": {"streams": 90_000, "connect_rate": 1000, "broadcast_last_seconds": 2.0},
        }
    finally:
        stack.close()


def _wait_outbox_delivered(app, timeout: float, first_id: int = 0) -> None:
    """Wait until no outbox row from ``first_id`` on waits for delivery (the worker caught up)."""
    deadline = time.monotonic() + timeout
    waiting = (
        select(func.count())
        .select_from(OutboxEvent)
        .where(OutboxEvent.id >= first_id, OutboxEvent.delivered_at.is_(None))
    )
    with app.app_context():
        while db.session.scalar(waiting):
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not deliver every outbox row in time")
            db.session.expire_all()
            time.sleep(0.05)


def _tree_rss_kb(pid: int) -> int:
    """RSS of a process and its children (nginx's master and workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return rss_kb(pid) + sum(rss_kb(int(c)) for c in children)


def _login(url: str, username: str, password: str) -> tuple[dict, str]:
    """Log in over HTTP; return the session cookies and a CSRF token for them."""
    with httpx.Client(base_url=url, timeout=10) as client:
        token = client.get("/api/csrf").json()["csrf_token"]
        client.post(
            "/api/login", json={"username": username, "password": password}, headers={"X-CSRFToken": token}
        ).raise_for_status()
        token = client.get("/api/csrf").json()["csrf_token"]
        return dict(client.cookies), token


def latency(
    streams: int = 1000, rate: float = 100, seconds: float = 20, cluster: bool = False, web_processes: int = 1
) -> dict:
    """Answer POST -> ``new_answers`` on the follower's stream, at ``rate`` answers/s (on a
    3-master cluster with streams spread over ``web_processes`` behind nginx, if asked)."""
    stack = Stack(_workdir("latency"), cluster=cluster, SSE_HEARTBEAT_SECONDS="15")
    try:
        app = stack.app()
        ids = create_users(app, streams, prefix="l")
        create_users(app, 1, prefix="bot")
        questions = {}
        for uid in ids:
            qid = ask_as(app, uid, f"question of {uid}")
            follow_question(app, [uid], qid)
            questions[uid] = qid
        before = redis_clients(stack.redis())
        url = stack.start_webs(web_processes)
        fleet = ClientFleet(port_of(url), session_cookies(app, ids), seconds=300)
        fleet.wait_ready()
        per_web = (redis_clients(stack.redis()) - before) / web_processes
        stack.start_worker(concurrency=2)
        cookies, token = _login(url, "bot0", PASSWORD)
        clients = ThreadClients(base_url=url, cookies=cookies, headers={"X-CSRFToken": token}, timeout=10)
        total = int(rate * seconds)
        errors, post_ms = [], []

        def post(i: int) -> None:
            uid = ids[i % len(ids)]
            started = time.monotonic()
            try:
                resp = clients.get().post(f"/api/questions/{questions[uid]}/answers", json={"body": f"m{i}"})
                ok = resp.status_code == 201
            except httpx.HTTPError:
                ok = False
            post_ms.append((time.monotonic() - started) * 1000)
            if not ok:
                errors.append(i)

        cpu_before = _cpu_seconds(stack, fleet)
        figures = measure_latency(fleet, post, total, rate)
        cpu = {role: round(t - cpu_before.get(role, 0), 1) for role, t in _cpu_seconds(stack, fleet).items()}
        fleet.close()
        return {
            "streams": streams,
            "answers": total,
            "rate_per_second": rate,
            "post_errors": len(errors),
            **figures,
            "post_response_ms": {"p50": round(_pct(post_ms, 50), 1), "p99": round(_pct(post_ms, 99), 1)},
            "cpu_seconds": cpu,
            "target_p99_ms": 50,
            **_topology(cluster, web_processes, per_web),
        }
    finally:
        stack.close()


def _command_usec(r) -> dict[str, dict[str, float]]:
    """Valkey's own count and time of each command since its statistics were reset: the
    commands a script runs are counted apart, so the cost per recipient shows per command."""
    stats = r.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): {"calls": int(s["calls"]), "usec": int(s["usec"])}
        for name, s in sorted(stats.items(), key=lambda item: -int(item[1]["usec"]))
        if int(s["calls"])
    }


def _stack_cpu_seconds(stack: Stack) -> dict[str, float]:
    """CPU seconds used so far by the stack's workers (their pools included) and Redis."""
    return {role: t for role, t in _cpu_seconds(stack, None).items() if role in ("worker", "redis")}


def _cpu_seconds(stack: Stack, fleet: ClientFleet | None) -> dict[str, float]:
    """CPU seconds (user + system) used so far by the stack's processes, by role: the web
    processes, the worker (its pool included), Redis, and the load generators."""
    import psutil

    def tree(pid: int) -> float:
        try:
            procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        total = 0.0
        for proc in procs:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    roles: dict[str, float] = {}
    for proc in stack.children:
        command = " ".join(map(str, proc.args))
        role = next((r for r in ("nginx", "worker") if r in command), "web")
        roles[role] = roles.get(role, 0.0) + tree(proc.pid)
    roles["redis"] = sum(tree(server.process.pid) for server in stack.servers if getattr(server, "process", None))
    roles["load_generators"] = sum(tree(proc.pid) for proc in fleet._procs) if fleet else 0.0
    own = psutil.Process().cpu_times()
    roles["driver"] = own.user + own.system  # this process alone: the HTTP clients posting the answers
    return roles


class ThreadClients:
    """One httpx client per driver thread (they are not shared), all built before the clock
    starts: building one takes tens of milliseconds, which would count as latency."""

    def __init__(self, count: int = DRIVER_THREADS, **client_args) -> None:
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(count):
            self._free.put(httpx.Client(**client_args))
        self._local = threading.local()

    def get(self) -> httpx.Client:
        if not hasattr(self._local, "client"):
            self._local.client = self._free.get()
        return self._local.client


def paced(total: int, rate: float, send, workers: int = DRIVER_THREADS) -> dict[str, float]:
    """Call ``send(i)`` for i < total at ``rate`` per second (on a thread pool unless
    ``workers`` is 0); return the send time of each marker ``m<i>``."""
    from concurrent.futures import ThreadPoolExecutor

    sent: dict[str, float] = {}

    def timed(i: int) -> None:
        sent[f"m{i}"] = time.time()
        send(i)

    started = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=workers) if workers else None
    for n in range(total):
        wait = started + n / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        if pool:
            pool.submit(timed, n)
        else:
            timed(n)
    if pool:
        pool.shutdown(wait=True)
    return sent


def latencies_ms(fleet: ClientFleet, sent: dict[str, float], total: int, wait: float = 30) -> list[float]:
    """Wait (up to ``wait`` s) for the ``total`` new_answers events marked in ``sent``;
    return their send -> receive times in ms."""
    import json

    def collect() -> list[float]:
        out = []
        for e in fleet.events_of("new_answers"):
            marker = json.loads(e["data"]).get("excerpt")
            if marker in sent:
                out.append((e["t"] - sent[marker]) * 1000)
        return out

    deadline = time.monotonic() + wait
    while len(lat := collect()) < total and time.monotonic() < deadline:
        time.sleep(0.2)
    return lat


def measure_latency(
    fleet: ClientFleet, send, total: int, rate: float, workers: int = DRIVER_THREADS, warm_seconds: float = 2.0
) -> dict:
    """Send events at ``rate`` without a pause: the first ``warm_seconds`` of them are
    reported apart (cold worker processes, empty connection pools and caches), the next
    ``total`` are the measured series."""
    warm_total = int(rate * warm_seconds)
    sent = paced(warm_total + total, rate, send, workers)
    warm_keys = {f"m{i}" for i in range(warm_total)}
    warm = latencies_ms(fleet, {k: t for k, t in sent.items() if k in warm_keys}, warm_total)
    lat = latencies_ms(fleet, {k: t for k, t in sent.items() if k not in warm_keys}, total)
    return {
        **latency_summary(lat),
        "warm_up": {
            "events": warm_total,
            "received": len(warm),
            "p99_ms": round(_pct(warm, 99), 1) if warm else None,
            "max_ms": round(max(warm), 1) if warm else None,
        },
    }


def latency_summary(lat: list[float]) -> dict:
    return {
        "received": len(lat),
        "p50_ms": round(_pct(lat, 50), 1) if lat else None,
        "p99_ms": round(_pct(lat, 99), 1) if lat else None,
        "max_ms": round(max(lat), 1) if lat else None,
        "latencies_ms": [round(x, 2) for x in lat],
    }
