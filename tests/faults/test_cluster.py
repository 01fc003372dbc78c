"""Faults on a Valkey cluster (3 masters + 3 replicas): a master dies, a slot moves.

The same accounting as the single-server scenarios: numbered events to several users
while the fault happens, each user's live stream must hold every event exactly once (or
say ``resync`` and have a complete inbox), and every inbox must be complete.
"""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest
import redis

from devstack.embedded_redis import free_port
from devstack.local_cluster import nginx_binary, start_nginx
from qa_notify.events import channels
from qa_notify.events.connections import make_client

from .conftest import record
from .test_faults import EVENTS, check_and_record, run_series

pytestmark = pytest.mark.faults
USERS = 6  # spread over the three masters


def master_of(stack, user_id: int) -> int:
    """Return the port of the master serving ``user_id``'s slot, as the live nodes see it."""
    client = make_client(stack.redis_url)
    slot = client.keyslot(channels.user_stream(user_id))
    client.close()
    for node in stack.cluster.nodes:  # ask a live node who serves the slot now
        if node.process is None:
            continue
        for low, high, master, *_ in redis.Redis(port=node.port).cluster("slots"):
            if int(low) <= slot <= int(high):
                return int(master[1])
    raise AssertionError("no live node answers")


def node_id(port: int) -> str:
    return redis.Redis(port=port, decode_responses=True).cluster("myid")


def test_a_master_killed_its_replica_takes_over_and_nothing_is_lost(cluster_stack):
    stack = cluster_stack
    user_ids = stack.users(USERS)
    stack.start_web()
    port = master_of(stack, user_ids[0])
    on_it = [uid for uid in user_ids if master_of(stack, uid) == port]

    def kill_master():
        stack.cluster.node_on(port).kill()

    def wait_for_failover():
        # Until a replica of the dead master serves its slots (what clients then find).
        deadline = time.monotonic() + 30
        while master_of(stack, user_ids[0]) == port:
            assert time.monotonic() < deadline, "no replica took over"
            time.sleep(0.1)

    clients, recovered = run_series(stack, user_ids, kill_master, recover=wait_for_failover, pace=0.05)
    lost, dup = check_and_record(
        "cluster_master_killed",
        stack,
        user_ids,
        clients,
        recovered,
        allow_inbox_recovery=True,
        ordered=False,  # events committed during the failover arrive after it
        users_on_killed_master=len(on_it),
        resyncs=sum(c.resyncs for c in clients),
    )
    assert (lost, dup) == (0, 0)
    assert all(len(set(c.ticks)) == EVENTS or c.resyncs for c in clients)


def test_a_slot_moved_between_masters_while_events_flow(cluster_stack):
    stack = cluster_stack
    user_ids = stack.users(USERS)
    stack.start_web()
    port = master_of(stack, user_ids[0])
    source = node_id(port)
    target_port = next(p for p in (master_of(stack, uid) for uid in user_ids) if p != port)
    target = node_id(target_port)
    slot = make_client(stack.redis_url).keyslot(channels.user_stream(user_ids[0]))
    slots = _slots_up_to(port, slot)

    def move_slot():
        # valkey-cli's own resharding, narrowed to the one slot user0 lives in.
        stack.cluster.cli(
            "--cluster", "reshard", f"127.0.0.1:{port}", "--cluster-from", source, "--cluster-to", target,
            "--cluster-slots", str(slots), "--cluster-yes",
        )  # fmt: skip

    clients, recovered = run_series(stack, user_ids, move_slot, pace=0.05)
    lost, dup = check_and_record(
        "cluster_slot_moved", stack, user_ids, clients, recovered, ordered=False, slots_moved=slots
    )
    assert master_of(stack, user_ids[0]) == target_port  # the slot did move
    assert (lost, dup) == (0, 0)


def _slots_up_to(port: int, slot: int) -> int:
    """How many of the master's slots, counted from its lowest, reach ``slot`` (reshard moves the lowest first)."""
    ranges = [r for r in redis.Redis(port=port).cluster("slots") if int(r[2][1]) == port]
    owned = sorted(s for low, high, *_ in ranges for s in range(int(low), int(high) + 1))
    return owned.index(slot) + 1


def test_one_of_two_workers_killed_mid_fan_out_on_rabbitmq_the_other_finishes(rabbitmq_cluster_stack):
    from sqlalchemy import func, select

    from qa_notify.extensions import db
    from qa_notify.models import Notification, OutboxEvent

    stack = rabbitmq_cluster_stack
    followers = 20_000
    ids = stack.followers(followers)
    stack.app.extensions["celery"].conf.task_always_eager = False
    victim = stack.start_worker(concurrency=2)
    stack.start_worker(beat=True, concurrency=2)
    time.sleep(4)
    stack.publish(ids, 0)  # 10 batch tasks of 2,000 through RabbitMQ, shared by the two workers
    stack.wait_for_first_inbox_row()
    os.killpg(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    with stack.app.app_context():
        partial = db.session.scalar(select(func.count()).select_from(Notification))
        while db.session.scalar(select(OutboxEvent.delivered_at)) is None:
            assert time.monotonic() - killed_at < 90, "the other worker did not finish the fan-out"
            time.sleep(0.2)
            db.session.expire_all()
        rows = db.session.scalar(select(func.count()).select_from(Notification))
        distinct = db.session.scalar(select(func.count(func.distinct(Notification.user_id))))
    r = make_client(stack.redis_url)
    lengths = [r.xlen(channels.user_stream(uid)) for uid in ids]
    record(
        "cluster_worker_killed_rabbitmq",
        sent=followers,
        received=sum(lengths),
        lost=sum(1 for n in lengths if n == 0),
        duplicated=sum(n - 1 for n in lengths if n > 1),
        recover_s=round(time.monotonic() - killed_at, 2),
        inbox_rows_when_killed=partial,
    )
    assert rows == distinct == followers
    assert all(n == 1 for n in lengths), "a follower got a duplicate or nothing"


def test_a_web_process_killed_behind_nginx_its_browsers_come_back_through_the_other(cluster_stack, tmp_path):
    if nginx_binary() is None:
        pytest.skip("nginx is not installed (CI installs Debian's nginx-light)")
    stack = cluster_stack
    user_ids = stack.users(USERS)
    webs = [stack.start_web(PROXY_COUNT="1") for _ in range(2)]
    stack.web = webs[0]  # killed below; the stack stops the other in its teardown
    port = free_port()
    nginx = start_nginx(port, [w.port for w in webs], tmp_path / "nginx")
    try:
        _wait_for(f"http://127.0.0.1:{port}/healthz")
        clients, recovered = run_series(stack, user_ids, webs[0].kill, base_url=f"http://127.0.0.1:{port}", pace=0.05)
        moved = sum(1 for c in clients if c.reconnects)
        lost, dup = check_and_record(
            "nginx_web_killed", stack, user_ids, clients, recovered, clients_reconnected_via_nginx=moved
        )
        assert (lost, dup) == (0, 0)
        assert moved >= 1  # some browsers were on the killed process and came back through nginx
    finally:
        nginx.terminate()
        nginx.wait(10)
        webs[1].stop()


def _wait_for(url: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code in (200, 503):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


class Recorder:
    """What a broker hands on (the registry's side of the interface), kept to look at."""

    def __init__(self) -> None:
        self.delivered: list[tuple[int, str]] = []
        self.resumed: list[int] = []

    def deliver(self, user_id, event) -> None:
        self.delivered.append((user_id, event.data))

    def resume(self, user_id) -> None:
        self.resumed.append(user_id)

    def close(self, user_id, reason, session_id) -> None: ...
    def mute(self, user_id, muted) -> None: ...
    def deliver_broadcast(self, event) -> None: ...
    def resume_broadcasts(self) -> None: ...


@pytest.fixture
def cluster_broker(tmp_path):
    from devstack.embedded_redis import EmbeddedCluster
    from qa_notify.live.subscriber import ClusterBroker

    cluster = EmbeddedCluster(tmp_path / "cluster", persist=False).start()
    client = make_client(cluster.url)
    broker = ClusterBroker(client)
    recorder = Recorder()
    broker.bind(recorder)
    yield broker, recorder, client
    broker.stop()
    client.close()
    cluster.stop()


def _until(condition, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _live_after_cut(broker, recorder, client, user_id: int) -> None:
    """The user's channel resumes (its streams re-read what they missed) and carries new events."""
    _until(lambda: user_id in recorder.resumed, "the cut channel was never subscribed again and resumed")
    assert broker.wait_confirmed(user_id, 5)
    client.spublish(channels.user_channel(user_id), "1-0\ntick\nafter the cut")
    _until(lambda: (user_id, "after the cut") in recorder.delivered, "an event after the cut did not arrive")


def test_a_channel_dropped_while_the_cluster_still_names_its_server_is_subscribed_again(cluster_broker):
    # A reshard: the old master drops the channel before every node's view of the slots has
    # caught up, so asking the cluster who owns it can still name the old master.
    broker, recorder, client = cluster_broker
    broker.subscribe(7)
    assert broker.wait_confirmed(7, 10)
    channel = channels.user_channel(7)
    shard = broker._shards[broker._shard_of[channel]]
    broker.dropped(shard, channel)
    _live_after_cut(broker, recorder, client, 7)


def test_a_subscription_refused_with_moved_follows_the_owner_the_refusal_names(cluster_broker):
    broker, recorder, client = cluster_broker
    broker.subscribe(8)
    assert broker.wait_confirmed(8, 10)
    channel = channels.user_channel(8)
    owner = broker._shard_of[channel]
    elsewhere = next((n.host, int(n.port)) for n in client.get_primaries() if (n.host, int(n.port)) != owner)
    # As if a stale view had sent the channel to a master that does not serve its slot:
    # that master answers MOVED, naming the owner, and the channel goes there.
    broker.slot_moved(broker._shards[owner], client.keyslot(channel), elsewhere)
    _live_after_cut(broker, recorder, client, 8)
    assert broker._shard_of[channel] == owner
