"""Every Redis key and channel name qa_notify uses, in one place.

These names are a public interface: non-Python producers write to ``INGEST_STREAM`` and
operators read them with ``redis-cli``. Change them only with a migration note.

Everything that belongs to one user (their stream, live channel, stream leases, when they
last had a stream open, and the push markers of their notifications) carries the hash tag
of the user's *partition*, so on a Redis Cluster it all lives in one slot: every per-user
Lua call stays on one node.
Users are spread over ``PARTITIONS`` partitions whose tags were chosen to land on evenly
spaced slots (plain ``{0}``..``{127}`` hash unevenly; Centrifugo ships a table for the
same reason), so a cluster's masters share the users evenly and a fan-out batch needs
one Lua call per partition, not one per user.

An event for everyone (an admin's broadcast) is written once, not once per user: to the
broadcast stream and channel, which share one hash tag of their own (``BROADCAST_TAG``),
so the one Lua call that writes and publishes it runs on one node, and every web process
subscribes to that one channel.
"""

from __future__ import annotations

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

PREFIX = "qa"
PARTITIONS = 128  # a power of two


def _partition_tags(count: int) -> tuple[str, ...]:
    """Return one short hash tag per partition, each in its own slice of the slots.

    Partition i takes the slice whose number is i with its bits reversed, so consecutive
    partitions (and so consecutive user ids) land far apart: on different masters.
    """
    bits = count.bit_length() - 1
    tags = []
    for i in range(count):
        piece = int(f"{i:0{bits}b}"[::-1], 2)
        low, high = piece * REDIS_CLUSTER_HASH_SLOTS // count, (piece + 1) * REDIS_CLUSTER_HASH_SLOTS // count
        k = 0
        while not low <= key_slot(f"{i}.{k}".encode()) < high:
            k += 1
        tags.append(f"{i}.{k}")
    return tuple(tags)


PARTITION_TAGS = _partition_tags(PARTITIONS)

# External producers append JSON envelopes here (see docs/external-producers in the README).
INGEST_STREAM = f"{PREFIX}:ingest"
INGEST_GROUP = "qa-workers"
DEAD_LETTER_STREAM = f"{PREFIX}:ingest:dead"


def partition(user_id: int) -> int:
    """Return the partition ``user_id``'s keys and channel belong to."""
    return int(user_id) % PARTITIONS


def by_partition(pairs: list[tuple]) -> list[list[tuple]]:
    """Group ``(user_id, ...)`` tuples by the user's partition: each group's keys share one slot."""
    groups: dict[int, list[tuple]] = {}
    for pair in pairs:
        groups.setdefault(partition(pair[0]), []).append(pair)
    return list(groups.values())


def _user_prefix(user_id: int) -> str:
    return f"{PREFIX}:{{{PARTITION_TAGS[partition(user_id)]}}}:u:{int(user_id)}"


def delivery_keys(user_id: int) -> tuple[str, str]:
    """Return ``user_stream`` and ``user_channel`` at once (the fan-out names both for every
    recipient: the prefix is worked out once)."""
    prefix = _user_prefix(user_id)
    return f"{prefix}:events", f"{prefix}:live"


def user_channel(user_id: int) -> str:
    """Return the (sharded) pub/sub channel carrying ``user_id``'s live events."""
    return f"{_user_prefix(user_id)}:live"


def user_stream(user_id: int) -> str:
    """Return the capped Redis stream holding ``user_id``'s recent events for replay."""
    return f"{_user_prefix(user_id)}:events"


def user_connections(user_id: int) -> str:
    """Return the sorted set of leases on ``user_id``'s open streams (see live.leases)."""
    return f"{_user_prefix(user_id)}:conns"


def user_last_seen(user_id: int) -> str:
    """Return the key holding when ``user_id`` last had a stream open (Redis time, seconds; presence)."""
    return f"{_user_prefix(user_id)}:seen"


def delivered_marker(user_id: int, outbox_id: int) -> str:
    """Return the set of the inbox rows (notification ids) of outbox row ``outbox_id`` pushed
    so far to the users of ``user_id``'s partition: one key per event and partition, in the
    partition's slot, so a retried push skips them (not a key per recipient)."""
    return f"{PREFIX}:{{{PARTITION_TAGS[partition(user_id)]}}}:sent:{int(outbox_id)}"


# The hash tag of the broadcast stream, channel and markers: one slot, away from the users'.
BROADCAST_TAG = "bcast"


def broadcast_stream() -> str:
    """Return the capped Redis stream holding recent events for everyone (replay)."""
    return f"{PREFIX}:{{{BROADCAST_TAG}}}:events"


def broadcast_channel() -> str:
    """Return the (sharded) pub/sub channel every web process subscribes to for events for everyone."""
    return f"{PREFIX}:{{{BROADCAST_TAG}}}:live"


def broadcast_marker(outbox_id: int) -> str:
    """Return the key recording that outbox row ``outbox_id`` was published to everyone once (its entry id)."""
    return f"{PREFIX}:{{{BROADCAST_TAG}}}:sent:{int(outbox_id)}"


def outbox_started(outbox_id: int) -> str:
    """Return the key holding when a split fan-out of ``outbox_id`` started (its last batch times it)."""
    return f"{PREFIX}:started:outbox:{int(outbox_id)}"


def outbox_lock(outbox_id: int) -> str:
    """Return the key a worker holds while it fans out outbox row ``outbox_id``."""
    return f"{PREFIX}:lock:outbox:{int(outbox_id)}"


def outbox_progress(outbox_id: int) -> str:
    """Return the key counting the batches of a split fan-out still to deliver."""
    return f"{PREFIX}:progress:outbox:{int(outbox_id)}"


def outbox_drain_queued() -> str:
    """Return the flag saying a drain task is queued or running (see events.drain)."""
    return f"{PREFIX}:{{outbox}}:drain-queued"


def outbox_drain_wake() -> str:
    """Return the list a commit rings while a drain runs: the drain waits on it for more rows.

    It shares the flag's hash tag, so one Lua call can check the flag and ring (clusters too).
    """
    return f"{PREFIX}:{{outbox}}:drain-wake"


def user_id_from_channel(channel: str) -> int | None:
    """Return the user id encoded in a ``user_channel`` name, or None for other channels."""
    parts = channel.split(":")
    if len(parts) == 5 and parts[0] == PREFIX and parts[2] == "u" and parts[4] == "live" and parts[3].isdigit():
        user_id = int(parts[3])
        return user_id if channel == user_channel(user_id) else None
    return None


# Web Push (qa_notify.push): per user, so a user's push keys share their partition's slot.
def push_gate(user_id: int, group: str) -> str:
    """Return the key holding the outbox id of the last push of ``group`` to ``user_id`` (PUSH_MIN_INTERVAL)."""
    return f"{_user_prefix(user_id)}:push:gate:{_group_digest(group)}"


def push_trailing(user_id: int, group: str) -> str:
    """Return the key marking a push of ``group`` to ``user_id`` scheduled for when its gate opens."""
    return f"{_user_prefix(user_id)}:push:later:{_group_digest(group)}"


def push_sent(user_id: int, subscription_id: int, outbox_id: int) -> str:
    """Return the key recording that the push of ``outbox_id`` reached device ``subscription_id``."""
    return f"{_user_prefix(user_id)}:push:sent:{int(subscription_id)}:{int(outbox_id)}"


def _group_digest(group: str) -> str:
    import hashlib

    return hashlib.sha256(group.encode("utf-8")).hexdigest()[:20]
