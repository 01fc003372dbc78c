"""How qa_notify reaches Redis: one server (``redis://``) or a Redis Cluster (``redis+cluster://``).

A cluster is named by listing some or all of its nodes, the way Flask-Limiter's storage
URIs do, so one setting serves both::

    REDIS_URL=redis+cluster://:secret@10.0.0.1:6379,10.0.0.2:6379,10.0.0.3:6379/

Every client is bounded: a blocking pool of a few connections per server (per node on a
cluster), so a connect storm waits for a connection instead of opening thousands.
"""

from __future__ import annotations

from urllib.parse import unquote

import redis
from redis.cluster import ClusterNode, RedisCluster

CLUSTER_SCHEME = "redis+cluster://"


class RedisURLError(ValueError):
    """A REDIS_URL that names no usable server; the message says what is wrong."""


def is_cluster(url: str | None) -> bool:
    """True when ``url`` names a Redis Cluster."""
    return bool(url) and url.startswith(CLUSTER_SCHEME)


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
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        username=username,
        password=password,
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


def connection_options(client: redis.Redis) -> dict:
    """Return what a raw connection to one of ``client``'s servers needs (credentials, db)."""
    if isinstance(client, RedisCluster):
        kwargs = client.get_default_node().redis_connection.connection_pool.connection_kwargs
        return {k: kwargs[k] for k in ("username", "password") if kwargs.get(k)}
    kwargs = client.connection_pool.connection_kwargs
    return {k: kwargs[k] for k in ("username", "password", "db") if kwargs.get(k) is not None}
