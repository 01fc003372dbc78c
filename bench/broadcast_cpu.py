"""CPU per stream of a broadcast, by process: ``python -m bench.broadcast_cpu STREAMS ROUNDS [WEBS]``.

One Valkey, ``WEBS`` web processes (the unit's command; nginx in front of more than one),
``STREAMS`` streams from the bench's load generators, a warm worker; then ``ROUNDS``
broadcasts, one at a time. Each prints a JSON line: the arrival times and the CPU seconds
each role (web, nginx, worker, Valkey, load generators, this driver) used from the send
to the last arrival, in microseconds per stream. Heartbeats are every 300 s, so they do
not count. Nothing is written to ``bench/results``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

from qa_notify.extensions import db
from qa_notify.models import User

from .clients import ClientFleet
from .scenarios import _cpu_seconds, _wait_outbox_delivered, _workdir
from .stack import Stack, port_of
from .users import create_admin, create_users, session_cookies


def main() -> None:
    streams, rounds = int(sys.argv[1]), int(sys.argv[2])
    webs = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    stack = Stack(_workdir("broadcast-cpu"), SSE_HEARTBEAT_SECONDS="300")
    try:
        app = stack.app()
        ids = create_users(app, streams, prefix="m")
        admin = create_admin(app)
        fleet = ClientFleet(port_of(stack.start_webs(webs)), session_cookies(app, ids), seconds=600)
        fleet.wait_ready()
        stack.start_worker(concurrency=2)
        from qa_notify.admin.service import send_broadcast

        with app.test_request_context():
            send_broadcast(db.session.get(User, admin), "warm-up", "admin", 1000)  # nobody else's role
        _wait_outbox_delivered(app, timeout=120)
        for k in range(rounds):
            seen, before = fleet.count_of("broadcast"), _cpu_seconds(stack, fleet)
            with app.test_request_context():
                sent = time.time()
                send_broadcast(db.session.get(User, admin), f"broadcast {k}", None, 1000)
            deadline = time.monotonic() + 120
            while fleet.count_of("broadcast") < seen + fleet.ready and time.monotonic() < deadline:
                time.sleep(0.02)
            after = _cpu_seconds(stack, fleet)
            arrivals = sorted(e["t"] - sent for e in fleet.events_of("broadcast")[seen:])
            per_stream = {role: round((after[role] - before.get(role, 0)) * 1e6 / fleet.ready, 1) for role in after}
            print(json.dumps({
                "streams": fleet.ready, "received": len(arrivals), "first_s": round(arrivals[0], 3),
                "median_s": round(statistics.median(arrivals), 3), "last_s": round(arrivals[-1], 3),
                "cpu_us_per_stream": per_stream,
            }), flush=True)  # fmt: skip
            _wait_outbox_delivered(app, timeout=120)
        fleet.close()
    finally:
        stack.close()


if __name__ == "__main__":
    main()
