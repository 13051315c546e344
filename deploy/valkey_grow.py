"""Growing a running Valkey cluster: join an empty node (as a primary or a replica), and move whole
partitions between primaries with Valkey's atomic slot migration (CLUSTER MIGRATESLOTS).

A partition moves as the run of slots around its slot that holds no other partition's slot (halfway to
each neighbour, as `contract.slots.slot_ranges` cuts them), clipped to what its primary owns: the slot
map stays a few contiguous ranges, and every key the partition's applies touch goes at once."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, replace
from typing import Any

import redis

from contract.redis_nodes import RedisNode, parse_redis_nodes
from contract.settings import Settings
from contract.slots import SLOTS, partition_slot
from deploy.credentials import ensure_secrets
from deploy.valkey_cluster import (
    DEFAULT_NODE_TIMEOUT_MS,
    FormError,
    _client,
    _nodes_table,
    _run,
    _text,
    _wait,
    master_auth_file,
    node_command,
)

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
        if str(rows_myself(rows)["master_id"]) == primary_id:
            return not member
        _run(client, "CLUSTER REPLICATE", primary_id)
        _wait(deadline, f"{new.address} to replicate", lambda: _in_sync(new))
        return True
    finally:
        client.close()


def rows_myself(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
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
