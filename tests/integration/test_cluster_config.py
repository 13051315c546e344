"""The compose cluster's NATS config (deploy/nats-cluster.conf plus what `python -m deploy.credentials
--cluster-nodes` adds): three real nodes form a cluster over authenticated routes, and nobody without
the route password gets in."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.js.api import StreamConfig

from deploy.credentials import Secrets, ensure_secrets, nats_cluster_config, write_secret
from deploy.servers import ROOT, nats_command, wait_for_port
from deploy.settings import Settings
from tests.helpers import eventually
from tests.ports import free_port

BASE = ROOT / "deploy" / "nats-cluster.conf"
Nodes = list[tuple[int, int, subprocess.Popen[bytes]]]


@pytest.fixture
def secrets(tmp_path: Path) -> Secrets:
    return ensure_secrets(tmp_path)


@pytest.fixture
def nodes(tmp_path: Path, secrets: Secrets) -> Iterator[Nodes]:
    """(client port, cluster port, process) of three nodes, each started from its generated config."""
    ports = [(free_port(), free_port()) for _ in range(3)]
    routes = [f"127.0.0.1:{cport}" for _, cport in ports]
    include = os.path.relpath(BASE, secrets.directory)
    procs = []
    for i, (port, cport) in enumerate(ports, start=1):
        config = secrets.directory / f"node-{i}.conf"
        text = nats_cluster_config(secrets, Settings(), include, f"127.0.0.1:{cport}", routes)
        write_secret(config, text)
        store = tmp_path / f"n{i}"
        store.mkdir()
        log = (tmp_path / f"n{i}.log").open("wb")
        env = {**os.environ, "NATS_NAME": f"node-{i}"}
        procs.append(subprocess.Popen(nats_command(port, store, config), stdout=log, stderr=log, env=env))
    for (port, _), proc in zip(ports, procs, strict=True):
        wait_for_port("127.0.0.1", port, 20, proc)
    yield [(port, cport, proc) for (port, cport), proc in zip(ports, procs, strict=True)]
    for proc in procs:
        proc.terminate()
        proc.wait(10)


async def test_the_compose_cluster_config_forms_a_cluster_over_authenticated_routes(
    nodes: Nodes, secrets: Secrets
) -> None:
    nc = await nats.connect(secrets.nats_url("admin", "127.0.0.1", nodes[0][0]))
    try:
        js = nc.jetstream()
        # An R3 stream can only be placed once all three nodes have routed to each other.
        info = await eventually(
            lambda: js.add_stream(StreamConfig(name="R3", subjects=["r3.>"], num_replicas=3)),
            lambda info: info.config.num_replicas == 3,
            timeout=30,
            interval=0.5,
        )
        assert info.cluster is not None
        assert len(info.cluster.replicas or []) == 2
    finally:
        await nc.close()


@pytest.mark.parametrize("password", ["wrong", None])
def test_a_route_without_the_route_password_is_refused(nodes: Nodes, password: str | None) -> None:
    with socket.create_connection(("127.0.0.1", nodes[0][1]), timeout=5) as sock:
        stream = sock.makefile("rb")
        assert stream.readline().startswith(b"INFO ")
        creds = f'"user":"route","pass":"{password}",' if password else ""
        sock.sendall(b"CONNECT {" + creds.encode() + b'"verbose":false,"pedantic":false}\r\nPING\r\n')
        assert b"Authorization Violation" in stream.readline()


async def test_the_cluster_refuses_anonymous_clients(nodes: Nodes) -> None:
    with pytest.raises((nats.errors.Error, OSError, asyncio.TimeoutError)):
        await nats.connect(f"nats://127.0.0.1:{nodes[1][0]}", allow_reconnect=False, connect_timeout=2)


async def test_a_client_given_one_server_fails_over_to_the_servers_the_cluster_advertises(
    nodes: Nodes, secrets: Secrets
) -> None:
    """nats-py sends a URL's own credentials only to that URL; the servers a cluster advertises join
    its pool without any, and were refused with 'Authorization Violation' (a CI run of the fault
    harness's ingest-node-isolated found it), so the settings pass credentials on their own."""
    first, _, process = nodes[0]
    settings = Settings(nats_url=secrets.nats_url("admin", "127.0.0.1", first))
    nc = await nats.connect(**settings.nats_options("hourglass-failover"))
    try:
        await eventually(lambda: asyncio.sleep(0, nc.discovered_servers), lambda found: len(found) == 2)
        process.kill()
        process.wait(10)
        moved = await eventually(
            lambda: asyncio.sleep(0, nc.connected_url), lambda url: url is not None and url.port != first
        )
        assert moved is not None
        assert moved.port in {nodes[1][0], nodes[2][0]}
        await nc.flush(timeout=5)
    finally:
        await nc.close()
