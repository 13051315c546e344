"""A real Valkey cluster for the tests: 3 primaries and 3 replicas on free loopback ports, formed by the
deploy code, with users per role and a short node timeout (a failover takes a second or two)."""

from __future__ import annotations

import contextlib
import random
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.credentials import Secrets, ensure_secrets, master_auth_file, write_redis_acl, write_urls
from deploy.redis_nodes import parse_redis_nodes
from deploy.servers import port_open, wait_for_port
from deploy.settings import Settings
from deploy.valkey_cluster import BUS_PORT_OFFSET, form, node_command

NODE_TIMEOUT_MS = 1000


@dataclass
class ValkeyCluster:
    ports: list[int]
    procs: dict[int, subprocess.Popen[bytes]]
    secrets: Secrets
    data_dir: Path

    def role_url(self, role: str) -> str:
        """Every node, comma separated, as ANALYTICS_REDIS_URL lists a cluster."""
        return ",".join(self.secrets.redis_url(role, "127.0.0.1", port) for port in self.ports)

    @property
    def url(self) -> str:
        return self.role_url("admin")

    def kill(self, port: int) -> None:
        """SIGKILL one node, as a crash would."""
        self.procs[port].kill()
        self.procs[port].wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def cluster_ports(count: int) -> list[int]:
    """Free client ports whose bus ports (client + 10000) are free too, both below the ephemeral range
    (a client's outgoing connection may hold a port there, and a server then cannot bind it)."""
    found: list[int] = []
    while len(found) < count:
        port = random.randint(11000, 22000)
        if port in found or port_open("127.0.0.1", port) or port_open("127.0.0.1", port + BUS_PORT_OFFSET):
            continue
        found.append(port)
    return found


def start_nodes(
    data_dir: Path, count: int, secrets: Secrets, acl: Path, node_timeout_ms: int = NODE_TIMEOUT_MS
) -> ValkeyCluster:
    ports = cluster_ports(count)
    procs: dict[int, subprocess.Popen[bytes]] = {}
    cluster = ValkeyCluster(ports, procs, secrets, data_dir)
    try:
        for port in ports:
            node_dir = data_dir / f"valkey-{port}"
            node_dir.mkdir(parents=True, exist_ok=True)
            log = (node_dir / "valkey.log").open("ab")
            auth = master_auth_file(secrets.directory, "admin", secrets.redis["admin"])
            argv = node_command(port, node_dir, acl, node_timeout_ms, auth)
            procs[port] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        for port in ports:
            wait_for_port("127.0.0.1", port, 20, procs[port])
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextlib.contextmanager
def running_cluster(
    data_dir: Path,
    primaries: int = 3,
    replicas: int = 1,
    partitions: int = 4,
    formed: bool = True,
    node_timeout_ms: int = NODE_TIMEOUT_MS,
) -> Iterator[ValkeyCluster]:
    secrets = ensure_secrets(data_dir)
    write_urls(secrets, 4222, 6379)  # keeps the passwords; the ports here are the nodes'
    acl = write_redis_acl(secrets, Settings())
    for attempt in range(3):  # another test's server may take a port between the check and the bind
        try:
            cluster = start_nodes(data_dir, primaries * (replicas + 1), secrets, acl, node_timeout_ms)
            break
        except RuntimeError:
            if attempt == 2:
                raise
    try:
        if formed:
            form(parse_redis_nodes(cluster.url), replicas, partitions, timeout_s=60)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def valkey_cluster(tmp_path: Path) -> Iterator[ValkeyCluster]:
    """3 primaries, one replica each, formed for 4 partitions (2/1/1)."""
    with running_cluster(tmp_path / "vc") as cluster:
        yield cluster
