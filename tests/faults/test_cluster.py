"""Faults on a Valkey cluster (3 masters + 3 replicas): a master dies, a slot moves.

The same accounting as the single-server scenarios: numbered events to several users
while the fault happens, each user's live stream must hold every event exactly once (or
say ``resync`` and have a complete inbox), and every inbox must be complete.
"""

from __future__ import annotations

import time

import pytest
import redis

from qa_notify.events import channels
from qa_notify.events.connections import make_client

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
