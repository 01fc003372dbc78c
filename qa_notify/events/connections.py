"""How qa_notify reaches Redis: one server (``redis://``) or a Redis Cluster (``redis+cluster://``).

A cluster is named by listing some or all of its nodes, the way Flask-Limiter's storage
URIs do, so one setting serves both::

    REDIS_URL=redis+cluster://:secret@10.0.0.1:6379,10.0.0.2:6379,10.0.0.3:6379/

Every client is bounded: a blocking pool of a few connections per server (per node on a
cluster), so a connect storm waits for a connection instead of opening thousands.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException

CLUSTER_SCHEME = "redis+cluster://"


class RedisURLError(ValueError):
    """A REDIS_URL that names no usable server; the message says what is wrong."""


def is_cluster(url: str | None) -> bool:
    """True when ``url`` names a Redis Cluster."""
    return bool(url) and url.startswith(CLUSTER_SCHEME)


def redacted(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``, for logs."""
    scheme, sep, rest = url.partition("://")
    auth, at, hosts = rest.rpartition("@")
    if not at or ":" not in auth:
        return url
    return f"{scheme}{sep}{auth.split(':', 1)[0]}:***@{hosts}"


def is_cluster_client(client: redis.Redis) -> bool:
    """True when ``client`` talks to a Redis Cluster."""
    return isinstance(client, RedisCluster)


def cluster_nodes(url: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    """Return the (host, port) nodes, user name and password a ``redis+cluster://`` URL names."""
    rest = url[len(CLUSTER_SCHEME) :].split("/", 1)[0].split("?", 1)[0]
    auth, _, hosts = rest.rpartition("@")
    username, _, password = auth.partition(":") if auth else ("", "", "")
    nodes = []
    for part in hosts.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise RedisURLError(
                f"REDIS_URL: {part.strip()!r} is not host:port (expected {CLUSTER_SCHEME}host:port,...)"
            )
        nodes.append((host.strip("[]"), int(port)))
    return nodes, unquote(username) or None, unquote(password) or None


def make_client(url: str, max_connections: int = 2, decode: bool = True) -> redis.Redis:
    """Return a client for ``url``: a ``Redis`` or, for a cluster, a ``RedisCluster``."""
    options = {"max_connections": max_connections, "timeout": 60, "decode_responses": decode}
    if not is_cluster(url):
        pool = redis.BlockingConnectionPool.from_url(url, health_check_interval=30, **options)
        return redis.Redis(connection_pool=pool)
    nodes, username, password = cluster_nodes(url)
    auth = f"{quote(username or '')}:{quote(password)}@" if password else ""
    # Built from a node URL: only that way does redis-py give each node the pool class asked for.
    return RedisCluster(
        url=f"redis://{auth}{nodes[0][0]}:{nodes[0][1]}",
        startup_nodes=[ClusterNode(host, port) for host, port in nodes[1:]],
        connection_pool_class=redis.BlockingConnectionPool,
        require_full_coverage=False,  # a cluster mid-failover still serves the slots it has
        **options,
    )


def primary_addresses(client: redis.Redis) -> list[tuple[str, int]]:
    """Return the (host, port) of every server that takes writes: the one server, or each master."""
    if isinstance(client, RedisCluster):
        return [(node.host, int(node.port)) for node in client.get_primaries()]
    kwargs = client.connection_pool.connection_kwargs
    return [(kwargs.get("host", "localhost"), int(kwargs.get("port", 6379)))]


# What a subscriber connection takes over from the client's own: who it is and how it
# talks (credentials, database, TLS), never the client's timeouts or health checks.
_CARRIED_OVER = ("username", "password", "credential_provider", "db", "client_name")


def subscriber_connection(client: redis.Redis, address: tuple[str, int]) -> redis.Connection:
    """Return a new, unconnected RESP2 connection to the server at ``address`` for pub/sub.

    It has no read timeout (it waits for messages for hours) and speaks RESP2, where
    pushed messages are plain arrays.
    """
    if isinstance(client, RedisCluster):
        pool = client.get_default_node().redis_connection.connection_pool
    else:
        pool = client.connection_pool
    kwargs = {k: v for k, v in pool.connection_kwargs.items() if k in _CARRIED_OVER or k.startswith("ssl")}
    return pool.connection_class(
        host=address[0],
        port=address[1],
        protocol=2,
        decode_responses=True,
        socket_keepalive=True,
        socket_timeout=None,
        **kwargs,
    )


def owner_of(client: redis.Redis, key: str) -> tuple[str, int]:
    """Return the address of the server that holds ``key`` (the master of its slot)."""
    if not isinstance(client, RedisCluster):
        return primary_addresses(client)[0]
    try:
        node = client.nodes_manager.get_node_from_slot(client.keyslot(key))
    except RedisClusterException as exc:  # the slot has no master right now (a failover)
        raise redis.ConnectionError(f"no master serves the slot of {key!r} now: {exc}") from exc
    return node.host, int(node.port)


def refresh_topology(client: redis.Redis) -> None:
    """Ask a cluster again which master serves which slots (after a failover or a move)."""
    if isinstance(client, RedisCluster):
        try:
            client.nodes_manager.initialize()
        except RedisClusterException as exc:  # no node answers yet
            raise redis.ConnectionError(f"the cluster's slots are not known yet: {exc}") from exc
