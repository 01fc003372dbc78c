"""Every Redis key and channel name qa_notify uses, in one place.

These names are a public interface: non-Python producers write to ``INGEST_STREAM`` and
operators read them with ``redis-cli``. Change them only with a migration note.
"""

PREFIX = "qa"

# Live fan-out: one pub/sub channel per user; web processes subscribe to the users they serve.
CONTROL_CHANNEL = f"{PREFIX}:control"
# External producers append JSON envelopes here (see docs/external-producers in the README).
INGEST_STREAM = f"{PREFIX}:ingest"
INGEST_GROUP = "qa-workers"
DEAD_LETTER_STREAM = f"{PREFIX}:ingest:dead"


def user_channel(user_id: int) -> str:
    """Return the pub/sub channel carrying ``user_id``'s live events."""
    return f"{PREFIX}:u:{int(user_id)}:live"


def user_stream(user_id: int) -> str:
    """Return the capped Redis stream holding ``user_id``'s recent events for replay."""
    return f"{PREFIX}:u:{int(user_id)}:events"


def user_connections(user_id: int) -> str:
    """Return the sorted set of leases on ``user_id``'s open streams (see notifications.quota)."""
    return f"{PREFIX}:u:{int(user_id)}:conns"


def delivered_marker(notification_id: int) -> str:
    """Return the key that records that inbox row ``notification_id`` was pushed live once."""
    return f"{PREFIX}:sent:{int(notification_id)}"


def outbox_lock(outbox_id: int) -> str:
    """Return the key a worker holds while it fans out outbox row ``outbox_id``."""
    return f"{PREFIX}:lock:outbox:{int(outbox_id)}"


def outbox_progress(outbox_id: int) -> str:
    """Return the key counting the batches of a split fan-out still to deliver."""
    return f"{PREFIX}:progress:outbox:{int(outbox_id)}"


def user_id_from_channel(channel: str) -> int | None:
    """Return the user id encoded in a ``user_channel`` name, or None for other channels."""
    parts = channel.split(":")
    if len(parts) == 4 and parts[0] == PREFIX and parts[1] == "u" and parts[3] == "live":
        try:
            return int(parts[2])
        except ValueError:
            return None
    return None
