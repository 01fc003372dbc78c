"""Drive ``bench.sse_clients`` processes from a benchmark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

from .stack import REPO

PER_PROCESS = 5000


class ClientFleet:
    """Several load-generating processes; collects their events in memory."""

    def __init__(
        self,
        port: int,
        cookies: dict[int, str],
        seconds: float = 120,
        path: str = "/notifications",
        cookie_name: str | None = "session",
        ready_on: str = "first_bytes",
        connect_rate: float = 4000,
        sources: tuple[str, ...] = ("127.0.0.1",),
        retry: bool = False,
        connect_timeout: float = 120,
        per_process: int = PER_PROCESS,
        nice: int = 0,
    ) -> None:
        """``connect_rate``: new streams per second, over all the processes; ``sources``: the
        loopback addresses the processes connect from, in turn (each has ~28k ports); ``retry``:
        refused attempts are tried again as the site's page does, for ``connect_timeout`` s;
        ``per_process``: streams per load-generating process; ``nice``: their CPU priority
        (on a machine shared with the servers, clients that would be elsewhere in real life
        yield the cores to them)."""
        self._raw_events: list[tuple[str, str, str, str]] = []
        self._counts: dict[str, int] = {}  # events per type, so waiting for them costs nothing
        self.ready = 0
        self.errors = 0
        self.error_samples: list[str] = []
        self._procs: list[subprocess.Popen] = []
        self._threads: list[threading.Thread] = []
        self._ready_count = 0
        self._stats: list[dict] = []
        self._lock = threading.Lock()
        items = list(cookies.items())
        processes = max(1, -(-len(items) // per_process))
        for start in range(0, len(items), per_process):
            job = {
                "port": port,
                "path": path,
                "cookie_name": cookie_name,
                "ready_on": ready_on,
                "connect_per_second": connect_rate / processes,
                "seconds": seconds,
                "cookies": {str(uid): c for uid, c in items[start : start + per_process]},
                "source": sources[(start // per_process) % len(sources)],
                "retry": retry,
                "connect_timeout": connect_timeout,
            }
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.sse_clients"],
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                preexec_fn=(lambda: os.nice(nice)) if nice else None,
            )
            proc.stdin.write(json.dumps(job) + "\n")
            proc.stdin.flush()
            self._procs.append(proc)
            thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            if line.startswith("E\t"):  # an event (most lines): kept as read, decoded when asked for
                _, uid, event_type, t, data = line.rstrip("\n").split("\t", 4)
                with self._lock:
                    self._raw_events.append((uid, event_type, t, data))
                    self._counts[event_type] = self._counts.get(event_type, 0) + 1
                continue
            msg = json.loads(line)
            with self._lock:
                if "ready" in msg:
                    self.ready += msg["ready"]
                    self.errors += msg["errors"]
                    self.error_samples += msg["error_sample"]
                    self._ready_count += 1
                elif "heartbeats" in msg:
                    self._stats.append(msg)

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while self._ready_count < len(self._procs) and time.monotonic() < deadline:
            time.sleep(0.1)

    def count_of(self, event_type: str) -> int:
        """How many events of ``event_type`` arrived so far (cheap: poll this, not ``events_of``)."""
        with self._lock:
            return self._counts.get(event_type, 0)

    def events_of(self, event_type: str) -> list[dict]:
        with self._lock:
            raw = [e for e in self._raw_events if e[1] == event_type]
        return [{"uid": uid, "type": kind, "t": float(t), "data": json.loads(data)} for uid, kind, t, data in raw]

    def stats(self, timeout: float = 180) -> dict[str, int]:
        """Ask every process for its counts; return the heartbeats received and streams open."""
        with self._lock:
            self._stats = []
        for proc in self._procs:
            proc.stdin.write("stats\n")
            proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while len(self._stats) < len(self._procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:
            return {key: sum(s[key] for s in self._stats) for key in ("heartbeats", "open", "refused")}

    def close(self) -> None:
        for proc in self._procs:
            try:
                proc.stdin.write("stop\n")
                proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass
        for proc in self._procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
