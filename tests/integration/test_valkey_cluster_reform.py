"""`python -m deploy.valkey_cluster form` run again on a cluster whose roles a failover changed (what
the compose cluster's one-shot `valkey-form` meets on an `up` after one): it does nothing."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from deploy.redis_nodes import parse_redis_nodes
from deploy.servers import ROOT
from deploy.valkey_cluster import _client, _run, form
from tests.helpers import eventually
from tests.integration.valkey_cluster import ValkeyCluster

pytestmark = pytest.mark.timeout(120)


async def test_form_leaves_a_failed_over_cluster_alone(valkey_cluster: ValkeyCluster) -> None:
    nodes = parse_redis_nodes(valkey_cluster.url)
    replica = _client(nodes[3])  # the plan's replica of the first primary
    assert replica.info("replication")["role"] == "slave"
    _run(replica, "CLUSTER FAILOVER")
    await eventually(
        lambda: asyncio.to_thread(replica.info, "replication"), lambda found: found["role"] == "master"
    )

    assert form(nodes, 1, 4) is False
    done = subprocess.run(
        [sys.executable, "-m", "deploy.valkey_cluster", "form", "--replicas", "1", "--wait-nodes", "10",
         valkey_cluster.url],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "valkey cluster of 6 nodes was already formed"
    assert replica.info("replication")["role"] == "master"  # and no role changed back
