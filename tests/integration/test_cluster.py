"""A 3-node JetStream cluster with the stream at R3: a node SIGKILLed under load loses no 204."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import nats
import pytest

from contract.hours import system_now_ms
from deploy.credentials import ensure_secrets, write_nats_config
from deploy.servers import NATS_CONF, nats_cluster_command, wait_for_port
from deploy.settings import Settings
from tests.conftest import Server
from tests.helpers import eventually, isolated_settings
from tests.integration.conftest import production_stack
from tests.integration.load import Tally, drive, wait_until_done
from tests.integration.test_faults import converged
from tests.ports import free_port

pytestmark = pytest.mark.slow


@dataclass
class Node:
    port: int
    proc: subprocess.Popen[bytes]
    url: str


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[Node]]:
    # As `./just cluster-up` runs it: users per role, and routes that authenticate.
    secrets = ensure_secrets(tmp_path)
    config = write_nats_config(secrets, Settings(), NATS_CONF)
    ports = [free_port() for _ in range(3)]
    cluster_ports = [free_port() for _ in range(3)]
    nodes = []
    for i, (port, cport) in enumerate(zip(ports, cluster_ports, strict=True), start=1):
        store = tmp_path / f"n{i}"
        store.mkdir()
        peers = [p for p in cluster_ports if p != cport]
        routes = f"route:{secrets.nats['admin']}"
        argv = nats_cluster_command(f"n{i}", port, cport, peers, store, config, routes)
        log = (tmp_path / f"n{i}.log").open("wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        nodes.append(Node(port, proc, secrets.nats_url("admin", "127.0.0.1", port)))
    for node in nodes:
        wait_for_port("127.0.0.1", node.port, 20, node.proc)
    yield nodes
    for node in nodes:
        if node.proc.poll() is None:
            node.proc.terminate()
            node.proc.wait(10)


@pytest.fixture
def cluster_settings(cluster: list[Node], redis_server: Server) -> Settings:
    url = ",".join(n.url for n in cluster)
    return isolated_settings(
        url, redis_server.url, stream_replicas=3, projector_batch=50, publish_timeout_s=2.0
    )


@pytest.fixture
async def stack(cluster_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async for http in production_stack(cluster_settings, ready_timeout=60):
        yield http


async def test_a_cluster_node_killed_under_load_loses_no_acknowledged_event(
    stack: httpx.AsyncClient, cluster: list[Node], cluster_settings: Settings
) -> None:
    nc = await nats.connect(cluster_settings.nats_url.split(","))
    info = await eventually(
        lambda: nc.jetstream().stream_info(cluster_settings.stream_name),
        lambda i: bool(i.cluster and i.cluster.leader),
        timeout=30,
    )
    await nc.close()
    assert info.config.num_replicas == 3
    assert info.cluster is not None
    leader = info.cluster.leader
    names = {f"n{i}": node for i, node in enumerate(cluster, 1)}
    assert leader in names, info.cluster
    victim = names[leader]

    tally = Tally()
    load = asyncio.create_task(drive(stack, system_now_ms(), 1500, duplicate_every=10, tally=tally))
    await wait_until_done(tally, 400)
    victim.proc.kill()  # the stream leader, SIGKILL
    victim.proc.wait()
    await load
    await converged(stack, tally, cluster_settings)
    print(f"\ncluster, stream leader {leader} SIGKILLed under load: {tally.report()} counted=exact")
