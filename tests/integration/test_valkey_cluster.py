"""A Valkey cluster formed by the deploy code: partitions spread over the primaries, the one client
factory follows the cluster, and every process refuses node lists that are not one whole cluster."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis.exceptions

from contract.slots import SLOTS, key_slot, partition_slot, partitions_in
from deploy.projections_client import ProjectionsClient, check_cluster, connect, node_client
from deploy.redis_nodes import parse_redis_nodes
from deploy.servers import ROOT, valkey_command, wait_for_port
from deploy.settings import Settings, SettingsError
from deploy.valkey_cluster import _client, _nodes_table, _run, form
from tests.conftest import Server
from tests.helpers import eventually, isolated_settings, settings_env
from tests.integration.conftest import make_stream
from tests.integration.valkey_cluster import ValkeyCluster, running_cluster
from tests.ports import free_port

pytestmark = pytest.mark.timeout(180)


def shards(cluster: ValkeyCluster, partitions: int) -> dict[int, list[int]]:
    """Port of each primary -> the partitions whose slots it serves."""
    rows = _nodes_table(_client(parse_redis_nodes(cluster.url)[0]))
    out: dict[int, list[int]] = {}
    for row in rows:
        if "master" in row["flags"]:
            port = next(p for p in cluster.ports if row["node_id"] == _myid(cluster, p))
            out[port] = sorted(
                p for low, high in row["slots"] for p in partitions_in(int(low), int(high), partitions)
            )
    return out


def _myid(cluster: ValkeyCluster, port: int) -> str:
    node = next(n for n in parse_redis_nodes(cluster.url) if n.port == port)
    raw = _run(_client(node), "CLUSTER MYID")
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def test_a_formed_cluster_assigns_every_slot_and_spreads_the_partitions(
    valkey_cluster: ValkeyCluster,
) -> None:
    for node in parse_redis_nodes(valkey_cluster.url):
        info = _run(_client(node), "CLUSTER INFO")
        assert isinstance(info, dict)
        assert info["cluster_state"] == "ok"
        assert int(info["cluster_slots_assigned"]) == SLOTS
    spread = shards(valkey_cluster, 4)
    assert sorted(len(found) for found in spread.values()) == [1, 1, 2]
    assert sorted(p for found in spread.values() for p in found) == [0, 1, 2, 3]
    # Formed already: a second `form` changes nothing.
    assert form(parse_redis_nodes(valkey_cluster.url), 1, 4) is False


def test_twelve_partitions_spread_four_a_primary(tmp_path: Path) -> None:
    with running_cluster(tmp_path, primaries=3, replicas=0, partitions=12) as cluster:
        assert sorted(len(found) for found in shards(cluster, 12).values()) == [4, 4, 4]


def test_the_slots_are_valkeys_own(valkey_cluster: ValkeyCluster) -> None:
    admin = _client(parse_redis_nodes(valkey_cluster.url)[0])
    for key in ["hg:{p0}:gen", "hg:{p11}:g1:2026112900:users", "plain", "{}x", "a{b}{c}", "{p3"]:
        assert key_slot(key) == _run(admin, "CLUSTER KEYSLOT", key)
    for p in range(12):
        assert partition_slot(p) == _run(admin, "CLUSTER KEYSLOT", f"hg:{{p{p}}}:x")


async def test_the_factory_connects_to_the_cluster_and_follows_moved(valkey_cluster: ValkeyCluster) -> None:
    """Writes through the factory's client land on each key's own primary, whichever node the client
    asked first; the `api` role may read through it (the slot map needs CLUSTER SLOTS)."""
    settings = Settings(redis_url=valkey_cluster.role_url("projector"))
    assert settings.redis_cluster
    await check_cluster(settings)
    client = connect(settings)
    reader = connect(Settings(redis_url=valkey_cluster.role_url("api")))
    try:
        for p in range(8):
            await client.set(f"hg:{{p{p}}}:probe", str(p))
        for p in range(8):
            assert await reader.get(f"hg:{{p{p}}}:probe") == str(p).encode()
    finally:
        await client.aclose()
        await reader.aclose()
    # A plain client of the first node is sent elsewhere (MOVED) for the partitions it does not hold.
    first = node_client(settings, settings.redis_nodes()[0])
    moved = 0
    try:
        for p in range(8):
            try:
                await first.get(f"hg:{{p{p}}}:probe")
            except redis.exceptions.MovedError:
                moved += 1
    finally:
        await first.aclose()
    assert moved > 0


def test_a_bad_node_list_is_one_line() -> None:
    bad = "redis://a:b@127.0.0.1:7001,rediss://a:b@127.0.0.1:7002"
    with pytest.raises(SettingsError, match=r"mixes redis:// and rediss://"):
        Settings(redis_url=bad).validate()
    with pytest.raises(SettingsError, match=r"other credentials"):
        Settings(redis_url="redis://a:b@h:1,redis://a:c@h:2").validate()


def plain_node(tmp_path: Path, cluster: ValkeyCluster) -> tuple[subprocess.Popen[bytes], int]:
    """A valkey-server not in cluster mode, with the cluster's users."""
    port = free_port()
    node_dir = tmp_path / "plain"
    node_dir.mkdir()
    acl = cluster.secrets.directory / "users.acl"
    proc = subprocess.Popen(valkey_command(port, node_dir, acl), stdout=subprocess.DEVNULL)
    wait_for_port("127.0.0.1", port, 20, proc)
    return proc, port


def assign_some_slots(cluster: ValkeyCluster) -> None:
    """The nodes meet, and only 10,000 of the 16,384 slots are assigned."""
    nodes = parse_redis_nodes(cluster.url)
    first = _client(nodes[0])
    for node in nodes[1:]:
        _run(first, "CLUSTER MEET", "127.0.0.1", node.port)
    _run(first, "CLUSTER ADDSLOTSRANGE", 0, 9999)


PROCESSES = [
    ["-m", "server"],
    ["-m", "projector", "run"],
    ["-m", "projector", "replay"],
    ["-m", "projector", "inspect"],
    ["-m", "projector", "audit"],
]


async def refusals(settings: Settings) -> list[tuple[list[str], int, str]]:
    """Each process started with these settings: its exit code and output."""
    env = settings_env(settings.replace(http_port=free_port(), admin_port=0, connect_deadline_s=5))

    async def one(args: list[str]) -> tuple[list[str], int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *args, env=env, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return args, proc.returncode, out.decode()

    return list(await asyncio.gather(*(one(args) for args in PROCESSES)))


@pytest.mark.parametrize("case", ["not_cluster", "two_clusters", "unassigned"])
async def test_every_process_refuses_a_node_list_that_is_not_one_whole_cluster(
    case: str, tmp_path: Path, valkey_cluster: ValkeyCluster, nats_server: Server
) -> None:
    with contextlib.ExitStack() as stack:
        if case == "not_cluster":
            proc, port = plain_node(tmp_path, valkey_cluster)
            stack.callback(proc.wait)
            stack.callback(proc.terminate)
            url = valkey_cluster.url + "," + valkey_cluster.secrets.redis_url("admin", "127.0.0.1", port)
            expected = rf"lists 7 nodes but 127.0.0.1:{port} is not in cluster mode"
        elif case == "two_clusters":
            shutil.copytree(valkey_cluster.secrets.directory, tmp_path / "other" / "secrets")
            other = stack.enter_context(running_cluster(tmp_path / "other", primaries=1, replicas=0))
            url = valkey_cluster.url + "," + other.url
            expected = r"nodes of two different clusters"
        else:
            other = stack.enter_context(running_cluster(tmp_path, primaries=3, replicas=0, formed=False))
            assign_some_slots(other)
            await eventually(lambda: asyncio.to_thread(_met, other), bool, 20)
            url = other.url
            expected = r"is not whole: cluster_state fail, 10000 of 16384 slots assigned"
        settings = isolated_settings(nats_server.url, url)
        await make_stream(settings)
        for args, code, out in await refusals(settings):
            assert code != 0, (args, out)
            assert len(out.strip().splitlines()) == 1, (args, out)
            assert re.search(expected, out), (args, out)
            if args == ["-m", "server"]:
                assert code == 78  # EX_CONFIG: `./just up` stops rather than restarts it


def _met(cluster: ValkeyCluster) -> bool:
    nodes = parse_redis_nodes(cluster.url)
    return all(len(_nodes_table(_client(n))) == len(nodes) for n in nodes)


async def test_inspect_shows_each_node_its_role_slots_and_partitions(
    valkey_cluster: ValkeyCluster, nats_server: Server
) -> None:
    settings = isolated_settings(nats_server.url, valkey_cluster.url)
    await make_stream(settings)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "projector", "inspect", env=settings_env(settings), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    view = out.decode().split("valkey cluster (6 nodes", 1)[1].splitlines()[1:]
    primaries = [line for line in view if " primary " in line]
    replicas = [line for line in view if " replica of 127.0.0.1:" in line]
    assert len(primaries) == 3
    assert len(replicas) == 3
    owned = sorted(line.split("partitions ")[1] for line in primaries)
    assert owned == sorted(", ".join(map(str, found)) for found in shards(valkey_cluster, 4).values())


def test_the_form_command_finds_a_formed_cluster_formed(valkey_cluster: ValkeyCluster) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "deploy.valkey_cluster", "form", "--replicas", "1", valkey_cluster.url],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "valkey cluster of 6 nodes was already formed"


async def test_a_killed_primary_is_replaced_by_its_replica_within_seconds(
    valkey_cluster: ValkeyCluster,
) -> None:
    """The fixture's short node timeout (1 s): the replica takes over in a few seconds, and the
    factory's client finds the partition's keys on it."""
    settings = Settings(redis_url=valkey_cluster.role_url("projector"))
    client = connect(settings)
    try:
        await client.set("hg:{p0}:probe", "before")
        holder = next(port for port, found in shards(valkey_cluster, 4).items() if 0 in found)
        primary = node_client(settings, next(n for n in settings.redis_nodes() if n.port == holder))
        try:
            assert await primary.wait(1, 5000) == 1  # the replica has it before the crash
        finally:
            await primary.aclose()
        valkey_cluster.kill(holder)
        await check_cluster(settings)  # a failover under way is no configuration error: processes start
        started = asyncio.get_running_loop().time()
        found = await eventually(lambda: _read_after_failover(client), lambda got: got == b"before", 30)
        took = asyncio.get_running_loop().time() - started
        assert found == b"before"
        assert took < 15, took
    finally:
        await client.aclose()


async def _read_after_failover(client: ProjectionsClient) -> bytes | None:
    value = await client.get("hg:{p0}:probe")
    return value if isinstance(value, bytes) else None
