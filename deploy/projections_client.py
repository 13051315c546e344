"""The one way every process connects to the projections: a Redis, or a Redis Cluster when
ANALYTICS_REDIS_URL lists several nodes, checked to be one whole cluster before it is used.

The contract imports only the standard library and msgspec, except here: every process must connect to
the projections the same way (same options, same cluster checks), so the factory lives beside the keys."""

from __future__ import annotations

import asyncio
from typing import TypeAlias

import redis.exceptions
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from contract.slots import SLOTS
from deploy.redis_nodes import RedisNode
from deploy.settings import Settings, SettingsError

ProjectionsClient: TypeAlias = Redis | RedisCluster
"""What a process holds to read and write the projections."""

CLUSTER_RETRIES = 3
RETRY_BASE_S = 0.05
RETRY_CAP_S = 0.25
"""A command on a shard that is failing over is retried about half a second in all, then fails: the
HTTP process answers 503 with Retry-After promptly, and the projector's own loop tries again. (redis-py's
default, 10 tries with backoff up to 1 s, held a GET for 3.5 s during a failover.)"""


def connect(settings: Settings) -> ProjectionsClient:
    """A client for ANALYTICS_REDIS_URL: one URL, today's Redis; several, a cluster client that
    follows MOVED and ASK, with the same credentials, TLS and timeouts."""
    if not settings.redis_cluster:
        return Redis.from_url(**settings.redis_options())
    nodes = settings.redis_nodes()
    options = {k: v for k, v in settings.redis_options().items() if k != "url"}
    return RedisCluster(
        startup_nodes=[ClusterNode(n.host, n.port) for n in nodes],
        username=nodes[0].username,
        password=nodes[0].password,
        ssl=nodes[0].scheme == "rediss",
        retry=Retry(ExponentialWithJitterBackoff(base=RETRY_BASE_S, cap=RETRY_CAP_S), CLUSTER_RETRIES),
        **options,
    )


def node_client(settings: Settings, node: RedisNode) -> Redis:
    """A plain client of one listed node (for checks and inspection), with the list's options."""
    options = {k: v for k, v in settings.redis_options().items() if k != "url"}
    return Redis(
        host=node.host,
        port=node.port,
        username=node.username,
        password=node.password,
        ssl=node.scheme == "rediss",
        **options,
    )


async def check_cluster(settings: Settings) -> None:
    """In cluster mode, SettingsError (one line) when a listed node is not in cluster mode, the nodes
    belong to different clusters, or the cluster has slots unassigned. Nodes that do not answer, and a
    cluster failing over, are left to the connection's own retries."""
    if not settings.redis_cluster:
        return
    nodes = settings.redis_nodes()
    found = await asyncio.gather(*(_node_view(settings, node, len(nodes)) for node in nodes))
    views = [(node, view) for node, view in zip(nodes, found, strict=True) if view is not None]
    for node, (myself, _, info) in views:
        other = next(((n, v) for n, v in views if myself not in v[1]), None)
        if other is not None:
            raise SettingsError(
                f"ANALYTICS_REDIS_URL lists nodes of two different clusters: {node.address} and "
                f"{other[0].address} do not know each other"
            )
        assigned = int(info.get("cluster_slots_assigned", 0))
        state = info.get("cluster_state", "?")
        # Slots nobody was given are configuration; a state that is not ok with every slot given is a
        # failover under way, which the connection's retries ride out (the server must not stop).
        if assigned < SLOTS:
            raise SettingsError(
                f"the Redis Cluster at {node.address} is not whole: cluster_state {state}, "
                f"{assigned} of {SLOTS} slots assigned"
            )


async def _node_view(
    settings: Settings, node: RedisNode, listed: int
) -> tuple[str, set[str], dict[str, str]] | None:
    """(its node id, the ids it knows, its CLUSTER INFO), or None when it does not answer."""
    client = node_client(settings, node)
    try:
        try:
            raw_info = await client.execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]
        except redis.exceptions.NoPermissionError as exc:
            raise SettingsError(
                f"Redis at {node.address}: the user may not run CLUSTER INFO ({exc})"
            ) from None
        except redis.exceptions.ResponseError as exc:
            if "cluster support disabled" in str(exc) or "cluster mode" in str(exc).lower():
                raise SettingsError(
                    f"ANALYTICS_REDIS_URL lists {listed} nodes but {node.address} is not in cluster mode"
                ) from None
            raise SettingsError(f"Redis at {node.address} refused CLUSTER INFO: {exc}") from None
        raw_nodes = await client.execute_command("CLUSTER NODES")  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        return None
    finally:
        await client.aclose()
    # redis-py parses both replies: CLUSTER INFO into a dict, CLUSTER NODES into address -> node dict.
    info = {str(k): str(v) for k, v in dict(raw_info).items()}
    rows = list(dict(raw_nodes).values())
    ids = {str(row["node_id"]) for row in rows}
    myself = next((str(row["node_id"]) for row in rows if "myself" in row["flags"]), "")
    return myself, ids, info
