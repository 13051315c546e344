"""Growing a running Valkey cluster: the deploy commands join new nodes and move whole partitions with
atomic slot migration; under POST and GET load on the whole stack (HTTP server and two projector
processes), every count ends exact, the read path answers through the moves, and replay follows."""

from __future__ import annotations

import subprocess
import sys

import pytest

from contract.redis_nodes import parse_redis_nodes
from contract.settings import Settings
from contract.slots import partition_slot
from deploy.servers import ROOT, free_port, wait_for_port
from deploy.valkey_cluster import master_auth_file, node_command
from deploy.valkey_grow import primaries
from tests.helpers import settings_env
from tests.integration.valkey_cluster import NODE_TIMEOUT_MS, ValkeyCluster, cluster_ports

pytestmark = pytest.mark.timeout(300)

PARTITIONS = 4  # the fixture's cluster is formed for 4 partitions (2/1/1 over its 3 primaries)


def start_node(cluster: ValkeyCluster) -> int:
    """One more empty node with the cluster's users, as `python -m deploy.valkey_cluster node` runs."""
    port = cluster_ports(1)[0]
    node_dir = cluster.data_dir / f"valkey-{port}"
    node_dir.mkdir(parents=True)
    auth = master_auth_file(cluster.secrets.directory, "admin", cluster.secrets.redis["admin"])
    argv = node_command(port, node_dir, cluster.secrets.directory / "users.acl", NODE_TIMEOUT_MS, auth)
    proc = subprocess.Popen(argv, stdout=(node_dir / "valkey.log").open("ab"), stderr=subprocess.STDOUT)
    cluster.procs[port] = proc
    wait_for_port("127.0.0.1", port, 20, proc)
    return port


def grow(cluster: ValkeyCluster, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m deploy.valkey_cluster ARGS` against the cluster, as an operator runs it."""
    env = settings_env(Settings(redis_url=cluster.url))
    return subprocess.run(
        [sys.executable, "-m", "deploy.valkey_cluster", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def held(cluster: ValkeyCluster) -> dict[str, list[int]]:
    """Address of each primary -> the partitions whose slots it serves."""
    seed = parse_redis_nodes(cluster.url)[0]
    return {s.address: [p for p in range(PARTITIONS) if s.owns(partition_slot(p))] for s in primaries(seed)}


def node_url(port: int) -> str:
    return f"redis://127.0.0.1:{port}"  # no credentials: the commands take ANALYTICS_REDIS_URL's


def test_the_commands_add_nodes_and_move_partitions_idempotently(valkey_cluster: ValkeyCluster) -> None:
    new, spare = start_node(valkey_cluster), start_node(valkey_cluster)
    done = grow(valkey_cluster, "add", node_url(new))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"127.0.0.1:{new} joined as a primary without slots"
    again = grow(valkey_cluster, "add", node_url(new))
    assert again.stdout.strip() == f"127.0.0.1:{new} was already a primary without slots", again.stderr
    replica = grow(valkey_cluster, "add", node_url(spare), "--replica-of", node_url(new))
    assert replica.returncode == 0, replica.stderr
    assert replica.stdout.strip() == f"127.0.0.1:{spare} joined as a replica of 127.0.0.1:{new}"
    assert held(valkey_cluster)[f"127.0.0.1:{new}"] == []

    # The primary holding two partitions gives one to the new primary (a primary that gave away its
    # last slots would turn into a replica of the target: Valkey's replica migration).
    balanced = grow(valkey_cluster, "rebalance")
    assert balanced.returncode == 0, balanced.stderr
    assert sorted(len(found) for found in held(valkey_cluster).values()) == [1, 1, 1, 1], balanced.stdout
    (partition,) = held(valkey_cluster)[f"127.0.0.1:{new}"]
    assert balanced.stdout.strip() == f"partition {partition} moved to 127.0.0.1:{new}"
    assert grow(valkey_cluster, "rebalance").stdout.strip() == "the partitions are balanced already"
    twice = grow(valkey_cluster, "move", "--partition", str(partition), "--to", node_url(new))
    assert twice.stdout.strip() == f"partition {partition} is already on 127.0.0.1:{new}", twice.stderr

    for args, expected in [
        (
            ["move", "--partition", "9", "--to", node_url(new)],
            "partition 9 is not one of 0..3",
        ),
        (
            ["move", "--partition", "0", "--to", node_url(spare)],
            "is not a primary of this cluster",
        ),
        (["add", f"redis://127.0.0.1:{free_port()}"], "valkey cluster: "),
    ]:
        refused = grow(valkey_cluster, *args)
        assert refused.returncode != 0, (args, refused.stdout)
        assert len(refused.stderr.strip().splitlines()) == 1, (args, refused.stderr)
        assert expected in refused.stderr, (args, refused.stderr)
