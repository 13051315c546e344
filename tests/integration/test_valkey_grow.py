"""Growing a running Valkey cluster: the deploy commands join new nodes and move whole partitions with
atomic slot migration; under POST and GET load on the whole stack (HTTP server and two projector
processes), every count ends exact, the read path answers through the moves, and replay follows."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import pytest

from contract.hours import HOUR_MS, hour_of, system_now_ms
from contract.slots import partition_slot
from deploy.credentials import ensure_secrets, master_auth_file, write_redis_acl, write_urls
from deploy.redis_nodes import parse_redis_nodes
from deploy.servers import ROOT, wait_for_port
from deploy.settings import Settings
from deploy.valkey_cluster import _client, node_command, primaries
from tests.conftest import Server
from tests.helpers import eventually, isolated_settings, settings_env
from tests.integration.conftest import make_stream, spawn, wait_ready
from tests.integration.load import ClosedHour, Tally, drive, wait_until_done
from tests.integration.test_faults import converged
from tests.integration.valkey_cluster import NODE_TIMEOUT_MS, ValkeyCluster, cluster_ports, running_cluster
from tests.ports import free_port

pytestmark = pytest.mark.timeout(300)

PARTITIONS = 4  # the fixture's cluster is formed for 4 partitions (2/1/1 over its 3 primaries)
GROWN = 12
"""Partitions of the cluster grown under load: 4 on each of 3 primaries, then 3 on each of 4."""
READ_WINDOW_S = 5.0
"""The longest the read path may answer 503 (with Retry-After) while partitions move."""


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


def held(cluster: ValkeyCluster, partitions: int = PARTITIONS) -> dict[str, list[int]]:
    """Address of each primary -> the partitions whose slots it serves."""
    seed = parse_redis_nodes(cluster.url)[0]
    return {s.address: [p for p in range(partitions) if s.owns(partition_slot(p))] for s in primaries(seed)}


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


@dataclass
class Reads:
    """GETs of the current hour and of a range, as a dashboard polls them during the moves."""

    ok: int = 0
    refused: list[tuple[float, int, str | None]] = field(default_factory=list)
    """(monotonic time, status, Retry-After) of every non-2xx answer."""
    no_answer: int = 0

    def window(self) -> float:
        return self.refused[-1][0] - self.refused[0][0] if self.refused else 0.0


async def read_while(
    http: httpx.AsyncClient, now_ms: int, stop: asyncio.Event, reads: Reads, closed: ClosedHour
) -> None:
    hour = now_ms - now_ms % HOUR_MS
    paths = [
        f"/analytics?timestamp={now_ms}",
        f"/analytics/range?from={hour - 6 * HOUR_MS}&to={hour + HOUR_MS}",
    ]
    while not stop.is_set():
        for path in paths:
            try:
                response = await http.get(path)
            except httpx.TransportError:
                reads.no_answer += 1
                continue
            if response.is_success:
                reads.ok += 1
            else:
                reads.refused.append(
                    (time.monotonic(), response.status_code, response.headers.get("retry-after"))
                )
        # An hour settled before the moves: every 200 for it shows exactly its counts (closed.wrong).
        if (answer := await closed.check(http)) is None:
            reads.no_answer += 1
        elif answer.is_success:
            reads.ok += 1
        else:
            reads.refused.append((time.monotonic(), answer.status_code, answer.headers.get("retry-after")))
        await asyncio.sleep(0.005)  # a poller's pace, not a wait for consistency


def commandstats(port: int, cluster: ValkeyCluster) -> tuple[int, int]:
    """(EVALSHA calls, NOSCRIPT errors) the node answered."""
    node = next(n for n in parse_redis_nodes(cluster.url))
    client = _client(replace(node, port=port))
    try:
        calls = client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
        errors = client.info("errorstats").get("errorstat_NOSCRIPT", {}).get("count", 0)
    finally:
        client.close()
    return int(calls), int(errors)


async def test_partitions_moved_to_a_new_primary_under_load_end_exact_and_reads_answer(
    tmp_path: Path, nats_server: Server, reaper: list[subprocess.Popen[bytes]]
) -> None:
    with running_cluster(tmp_path / "vc", primaries=3, replicas=1, partitions=GROWN) as cluster:
        settings = isolated_settings(
            nats_server.url, cluster.url, partitions=GROWN, projector_batch=20, read_staleness_s=0.05
        )
        await make_stream(settings)
        env = settings_env(settings)
        log = tmp_path / "stack.log"
        server = spawn(["-m", "server"], env, log)
        reaper.append(server)
        base = f"http://127.0.0.1:{settings.http_port}"
        await asyncio.to_thread(wait_ready, base, server)
        reaper.extend(spawn(["-m", "projector", "run"], env, log) for _ in range(2))
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            await eventually(lambda: http.get("/readyz"), lambda r: r.status_code == 200, 30)
            now, tally, reads, stop = system_now_ms(), Tally(), Reads(), asyncio.Event()
            closed = await ClosedHour.written(http, hour_of(now) - 10)
            load = asyncio.create_task(
                drive(
                    http, now, 4000, concurrency=6, duplicate_every=10, tally=tally, until=stop, timeout=240
                )
            )
            reading = asyncio.create_task(read_while(http, now, stop, reads, closed))
            await wait_until_done(tally, 200)
            new = start_node(cluster)
            added = await asyncio.to_thread(grow, cluster, "add", node_url(new))
            assert added.returncode == 0, added.stderr
            started, posted, read = time.monotonic(), tally.done, reads.ok
            moved = await asyncio.to_thread(grow, cluster, "rebalance", "--partitions", str(GROWN))
            took = time.monotonic() - started
            posted, read = tally.done - posted, reads.ok - read  # while the partitions moved
            assert moved.returncode == 0, moved.stderr
            at_move = tally.done
            await wait_until_done(tally, at_move + 300)
            stop.set()
            await load
            await reading
            shares = held(cluster, GROWN)
            assert sorted(len(found) for found in shares.values()) == [3, 3, 3, 3], (shares, moved.stdout)
            assert len(shares[f"127.0.0.1:{new}"]) == 3
            print(
                f"\ngrew 3 -> 4 primaries under load: {moved.stdout.strip()}; rebalance took {took:.2f} s; "
                f"{posted} events and {read} GETs done meanwhile; "
                f"{tally.report()}; GETs ok={reads.ok} refused={len(reads.refused)} "
                f"window={reads.window():.2f} s no-answer={reads.no_answer}"
            )
            assert all(status == 503 and retry for _, status, retry in reads.refused), reads.refused
            assert reads.window() <= READ_WINDOW_S, reads.refused
            assert reads.no_answer == 0
            assert closed.wrong == [], (closed.counts, closed.wrong[:5])
            assert posted > 0  # the moves ran under load: POSTs and GETs went on meanwhile
            assert read > 0
            await converged(http, tally, settings, timeout=90)
            # Counted only once converged: the moved partitions' applies may still be on their way.
            calls, noscript = commandstats(new, cluster)
            print(f"new primary: EVALSHA={calls} NOSCRIPT={noscript}")
            assert calls > 0  # the moved partitions' applies ran there, scripts loaded after NOSCRIPT

            replay = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "projector", "replay"],
                env=env, cwd=ROOT, capture_output=True, timeout=180, check=False,
            )  # fmt: skip
            assert replay.returncode == 0, replay.stderr.decode()
            await converged(http, tally, settings, timeout=90)


def test_the_node_command_runs_one_more_node_with_the_stacks_users(
    tmp_path: Path, reaper: list[subprocess.Popen[bytes]]
) -> None:
    data = tmp_path / "data"
    settings = Settings(data_dir=data, redis_url="redis://127.0.0.1:7001/0,redis://127.0.0.1:7002/0")
    port = cluster_ports(1)[0]
    command = [sys.executable, "-m", "deploy.valkey_cluster", "node", "--port", str(port)]
    missing = subprocess.run(
        command, env=settings_env(settings), cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert missing.returncode != 0
    assert missing.stderr.strip().endswith("start the stack once (./just cluster-up) so its users exist")
    secrets = ensure_secrets(data)  # what `./just cluster-up` leaves: the role URL files and the ACL
    write_urls(secrets, nats_port=4222, redis_port=port)
    write_redis_acl(secrets, settings)
    node = spawn(command[1:], settings_env(settings), tmp_path / "node.log")
    reaper.append(node)
    wait_for_port("127.0.0.1", port, 20, node)
    admin = _client(parse_redis_nodes(secrets.redis_url("admin", "127.0.0.1", port))[0])
    try:
        info = admin.info("cluster")
        assert info["cluster_enabled"] == 1
        assert admin.config_get("masteruser")["masteruser"] == "admin"  # replicas sign in as admin
    finally:
        admin.close()
    assert (data / f"valkey-{port}" / "nodes.conf").exists()
