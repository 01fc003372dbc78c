"""REDIS_WAIT_REPLICAS: deliveries are on the replicas before the worker moves on."""

from __future__ import annotations

import logging

import pytest
import redis

from qa_notify.events import channels
from qa_notify.events.connections import is_cluster_client


def ask_with_followers(login_as, followers: int) -> tuple[object, list[int]]:
    asker = login_as("asker")
    qid = asker.post("/api/questions", {"title": "Replicated?"}).get_json()["id"]
    ids = [asker.user_id]
    for i in range(followers):
        f = login_as(f"follower{i}")
        assert f.post(f"/api/questions/{qid}/follow", {}).status_code in (200, 201, 204)
        ids.append(f.user_id)
    return qid, ids


def test_fewer_replicas_than_asked_is_logged_and_delivery_completes(app, login_as, r, caplog):
    app.config.update(REDIS_WAIT_REPLICAS=5, REDIS_WAIT_TIMEOUT_MS=50)  # no deployment here has 5
    qid, ids = ask_with_followers(login_as, 2)
    with caplog.at_level(logging.WARNING, logger="qa_notify.events.bus"):
        assert login_as("bob").post(f"/api/questions/{qid}/answers", {"body": "hi"}).status_code == 201
    assert "replicas acknowledged" in caplog.text
    assert all(r.xlen(channels.user_stream(uid)) == 1 for uid in ids)


def test_every_master_that_took_deliveries_waited_for_its_replica(app, login_as, r):
    if not is_cluster_client(r):
        pytest.skip("needs masters with replicas: runs in the cluster pass (QA_TEST_REDIS=cluster)")
    app.config.update(REDIS_WAIT_REPLICAS=1, REDIS_WAIT_TIMEOUT_MS=1000)
    qid, ids = ask_with_followers(login_as, 8)
    before = {n.name: _waits(n) for n in r.get_primaries()}
    assert login_as("bob").post(f"/api/questions/{qid}/answers", {"body": "hi"}).status_code == 201
    owners = {r.nodes_manager.get_node_from_slot(r.keyslot(channels.user_stream(uid))).name for uid in ids}
    assert len(owners) > 1  # the users are spread over several masters
    for node in r.get_primaries():
        if node.name in owners:
            assert _waits(node) > before[node.name], f"{node.name} did not wait for its replica"
    # And the replicas hold every delivered event as soon as the worker is done.
    checked = 0
    for replica, master in _replicas(r):
        client = redis.Redis(host=replica[0], port=replica[1], decode_responses=True)
        client.execute_command("READONLY")
        for uid in ids:
            key = channels.user_stream(uid)
            if r.nodes_manager.get_node_from_slot(r.keyslot(key)).name == master:
                assert client.xlen(key) == 1
                checked += 1
    assert checked == len(ids)


def _replicas(r) -> list[tuple[tuple[str, int], str]]:
    """Return ((host, port), "master host:port") for every replica, from CLUSTER NODES."""
    text = r.get_primaries()[0].redis_connection.execute_command("CLUSTER", "NODES")
    nodes = [line.split() for line in (text if isinstance(text, str) else text.decode()).splitlines() if line]
    addr = {n[0]: n[1].split("@")[0] for n in nodes}
    out = []
    for n in nodes:
        if "slave" in n[2].split(",") and "fail" not in n[2]:
            host, port = addr[n[0]].rsplit(":", 1)
            out.append(((host, int(port)), addr[n[3]]))
    return out


def _waits(node) -> int:
    stats = node.redis_connection.info("commandstats")
    return int(stats.get("cmdstat_wait", {}).get("calls", 0))
