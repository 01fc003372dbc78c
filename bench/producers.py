"""Answers posted from several processes at once, each a ``post_answer`` caller as the API is.

Production runs several web processes, each posting the answers its requests carry; a
single process calling ``post_answer`` back to back measures one process's CPU, not the
site's. Each producer here is its own process (started with ``spawn``, so nothing of the
parent's connections is shared), builds the app as a web process does, waits for the
others, then posts its share of the answers: one app context per answer, with the user and
the question read in it, as a request reads them (no HTTP, CSRF or session cookie).
"""

from __future__ import annotations

import multiprocessing
import os
import time

from .stack import APP_SETTINGS, SECRET, Stack

# How long the producers may take to start (import and build the app) before they all begin.
START_TIMEOUT = 120


def post_in_processes(stack: Stack, answerers: list[int], question_ids: list[int], count: int, label: str) -> dict:
    """Post ``count`` answers round-robin over ``question_ids`` from one process per answerer,
    all starting together; return when the first began (``time.time()``), when the last
    finished, and the CPU seconds the producers used while posting."""
    ctx = multiprocessing.get_context("spawn")
    env = {k: v for k, v in stack.env.items() if k in APP_SETTINGS}
    barrier, results = ctx.Barrier(len(answerers) + 1, timeout=START_TIMEOUT), ctx.Queue()
    procs = [
        ctx.Process(
            target=_produce,
            args=(
                env,
                stack.redis_url,
                answerer,
                question_ids,
                range(n, count, len(answerers)),
                label,
                barrier,
                results,
            ),
        )
        for n, answerer in enumerate(answerers)
    ]
    for proc in procs:
        proc.start()
    barrier.wait()
    started = time.time()
    done = [results.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join(30)
    errors = [d["error"] for d in done if "error" in d]
    if errors:
        raise RuntimeError(f"a producer failed: {errors[0]}")
    return {
        "started": started,
        "finished": max(d["finished"] for d in done),
        "cpu_seconds": sum(d["cpu_seconds"] for d in done),
    }


def _produce(env, redis_url, answerer, question_ids, indexes, label, barrier, results) -> None:
    """One producer process: build the app, wait for the others, post the answers ``indexes``."""
    os.environ.update(env)
    try:
        from qa_notify import create_app
        from qa_notify.extensions import db
        from qa_notify.models import Question, User
        from qa_notify.qa.service import post_answer

        app = create_app({"SECRET_KEY": SECRET, "REDIS_URL": redis_url})
        with app.app_context():
            db.session.get(User, answerer)  # the database connection and the mappers, before the clock
        barrier.wait()
        cpu = time.process_time()
        for i in indexes:
            with app.app_context():  # a session of its own per answer, as a request has
                user = db.session.get(User, answerer)
                question = db.session.get(Question, question_ids[i % len(question_ids)])
                post_answer(user, question, f"{label} {i}")
        results.put({"finished": time.time(), "cpu_seconds": time.process_time() - cpu})
    except Exception as exc:  # the parent reports it
        barrier.abort()
        results.put({"error": f"{type(exc).__name__}: {exc}"})
