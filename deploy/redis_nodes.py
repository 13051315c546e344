"""ANALYTICS_REDIS_URL as a list of nodes: one URL is one Redis, several (comma separated) a cluster."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

SCHEMES = ("redis", "rediss")


class NodeListError(ValueError):
    """The node list cannot serve as one Redis or one cluster; the message is the one line to print."""


@dataclass(frozen=True, slots=True)
class RedisNode:
    scheme: str
    host: str
    port: int
    username: str | None
    password: str | None
    db: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def parse_redis_nodes(url: str) -> tuple[RedisNode, ...]:
    """Every node of the list, checked to be one deployment: same scheme and credentials, database 0
    when there are several (a cluster has only that one), no node twice."""
    parts = [one.strip() for one in url.split(",")]
    if not all(parts):
        raise NodeListError(f"ANALYTICS_REDIS_URL has an empty entry: {_count(parts)}")
    if len(parts) == 1:
        try:
            return (_node(1, parts[0]),)
        except NodeListError:
            return ()  # one URL of another kind (a Unix socket...): redis-py parses it, as ever
    nodes = tuple(_node(i, one) for i, one in enumerate(parts, 1))
    first = nodes[0]
    for i, node in enumerate(nodes[1:], 2):
        if node.scheme != first.scheme:
            raise NodeListError(
                f"ANALYTICS_REDIS_URL mixes {first.scheme}:// and {node.scheme}:// (node {i})"
            )
        if (node.username, node.password) != (first.username, first.password):
            raise NodeListError(
                f"ANALYTICS_REDIS_URL: node {i} ({node.address}) has other credentials than node 1; "
                "a cluster's nodes share one user and password"
            )
        if node.db != 0:
            raise NodeListError(
                f"ANALYTICS_REDIS_URL: node {i} ({node.address}) names database "
                f"{node.db}; a cluster has only database 0"
            )
    if first.db != 0:
        raise NodeListError(
            f"ANALYTICS_REDIS_URL: node 1 ({first.address}) names database {first.db}; "
            "a cluster has only database 0"
        )
    addresses = [n.address for n in nodes]
    twice = sorted({a for a in addresses if addresses.count(a) > 1})
    if twice:
        raise NodeListError(f"ANALYTICS_REDIS_URL lists {', '.join(twice)} more than once")
    return nodes


def _node(index: int, url: str) -> RedisNode:
    parts = urlsplit(url)
    where = f"ANALYTICS_REDIS_URL node {index}"
    if parts.scheme not in SCHEMES:
        raise NodeListError(f"{where}: scheme {parts.scheme or '(none)'}:// is not redis:// or rediss://")
    try:
        port = parts.port or 6379
    except ValueError:
        raise NodeListError(f"{where}: the port is not a number from 0 to 65535") from None
    if not parts.hostname:
        raise NodeListError(f"{where}: no host")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise NodeListError(f"{where}: database {path!r} is not a number")
    return RedisNode(
        scheme=parts.scheme,
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        db=int(path or 0),
    )


def _count(parts: list[str]) -> str:
    return f"{len(parts)} entries, {sum(1 for p in parts if not p)} empty"
