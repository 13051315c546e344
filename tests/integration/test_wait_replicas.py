"""ANALYTICS_REDIS_WAIT_REPLICAS on a real Valkey primary with one real replica (`--replicaof`), and on a
real Valkey cluster of one primary with one replica (`CLUSTER REPLICATE`)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from contract.cells import Cell, CellLayout
from contract.keys import Keys
from contract.slots import partition_slot
from deploy.servers import valkey_command, wait_for_port
from projector.fold.deltas import Deltas, HourDelta
from projector.projections.store import Outcome, ProjectionStore
from tests.helpers import eventually, metric, pause
from tests.ports import free_port

HOUR = 480_000


@contextmanager
def valkey(data_dir: Path, *extra: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    data_dir.mkdir()
    port = free_port()
    log = (data_dir / "log").open("wb")
    proc = subprocess.Popen([*valkey_command(port, data_dir), *extra], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, 20, proc)
        yield port, proc
    finally:
        with suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)  # a test may have left it stopped
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Redis, Redis, subprocess.Popen[bytes]]]:
    """(the primary, its replica in sync, the replica's process)."""
    # No 5 s pause before the replica's full sync (diskless sync's default delay).
    with valkey(tmp_path / "primary", "--repl-diskless-sync-delay", "0") as (primary_port, _):
        replicaof = ("--replicaof", "127.0.0.1", str(primary_port))
        with valkey(tmp_path / "replica", *replicaof) as (replica_port, replica_proc):
            primary = Redis.from_url(f"redis://127.0.0.1:{primary_port}/0")
            replica = Redis.from_url(f"redis://127.0.0.1:{replica_port}/0")
            await eventually(lambda: replica.info("replication"), lambda i: i["master_link_status"] == "up")
            yield primary, replica, replica_proc
            await primary.aclose()
            await replica.aclose()


def deltas(last_seq: int) -> Deltas:
    return Deltas(hours={HOUR: HourDelta.of({f"user-{last_seq}"}, 1, 0)}, last_seq=last_seq, events=1)


async def test_an_apply_returns_only_once_the_replica_holds_it(
    pair: tuple[Redis, Redis, subprocess.Popen[bytes]],
) -> None:
    primary, replica, replica_proc = pair
    keys = Keys("w")
    store = ProjectionStore(primary, keys, wait=(1, 5000), partitions=1)
    short = metric("hourglass_projector_wait_short_total")
    await store.current_generation(0)
    for seq in range(1, 51):
        result = await store.apply(1, 0, seq - 1, deltas(seq))
        assert result.outcome is Outcome.APPLIED
        # Read at once from the replica, no polling: WAIT returned, so it has this apply.
        assert int(await replica.get(keys.watermark(1, 0)) or 0) == seq
    assert await replica.hget(CellLayout(keys).counts(Cell.of_hour(1, 0, HOUR)), "clicks") == b"50"
    await held_back_by_a_stalled_replica(store, replica, replica_proc, keys, 50)
    assert metric("hourglass_projector_wait_short_total") == short


async def test_with_the_replica_gone_an_apply_waits_out_the_timeout_and_goes_on(
    pair: tuple[Redis, Redis, subprocess.Popen[bytes]],
) -> None:
    primary, _, replica_proc = pair
    store = ProjectionStore(primary, Keys("w"), wait=(1, 50), partitions=1)
    await store.current_generation(0)
    replica_proc.kill()
    replica_proc.wait()
    short = metric("hourglass_projector_wait_short_total")
    for seq in range(1, 4):
        assert (await store.apply(1, 0, seq - 1, deltas(seq))).outcome is Outcome.APPLIED
    assert metric("hourglass_projector_wait_short_total") == short + 3
    await primary.script_flush()  # as on a promoted replica: the script cache is empty
    assert (await store.apply(1, 0, 3, deltas(4))).outcome is Outcome.APPLIED
    assert await store.watermark(1, 0) == 4


async def call(node: Redis, *args: str | int) -> Any:
    return await node.execute_command(*args)  # type: ignore[no-untyped-call]


@pytest.fixture
async def cluster_pair(tmp_path: Path) -> AsyncIterator[tuple[RedisCluster, Redis, subprocess.Popen[bytes]]]:
    """(a cluster client, the replica of the primary owning partition 0's slot, the replica's process).

    The client starts from the other primary, which is then its default node: where redis-py sends a
    keyless WAIT unless told otherwise."""
    flags = ("--cluster-enabled", "yes", "--repl-diskless-sync-delay", "0")
    slot = partition_slot(0)
    # The bus port on a free port too: the default, port + 10000, may be taken or past 65535.
    a_bus = free_port()
    with (
        valkey(tmp_path / "a", *flags, "--cluster-port", str(a_bus)) as (a_port, _),
        valkey(tmp_path / "b", *flags, "--cluster-port", str(free_port())) as (b_port, _),
        valkey(tmp_path / "b-replica", *flags, "--cluster-port", str(free_port())) as (
            replica_port,
            replica_proc,
        ),
    ):
        a, b, replica = (Redis(port=port) for port in (a_port, b_port, replica_port))
        await call(a, "CLUSTER", "ADDSLOTSRANGE", 0, slot - 1, slot + 1, 16383)
        await call(b, "CLUSTER", "ADDSLOTS", slot)
        for node in (b, replica):
            await call(node, "CLUSTER", "MEET", "127.0.0.1", a_port, a_bus)
        b_id = (await call(b, "CLUSTER", "MYID")).decode()
        # REPLICATE fails until the replica has heard of b.
        await eventually(lambda: call(replica, "CLUSTER", "REPLICATE", b_id), lambda ok: bool(ok))
        await eventually(lambda: replica.info("replication"), lambda i: i["master_link_status"] == "up")
        await eventually(lambda: call(a, "CLUSTER", "INFO"), lambda i: b"cluster_state:ok" in i)
        await call(replica, "READONLY")
        cluster = RedisCluster(host="127.0.0.1", port=a_port)
        await cluster.initialize()
        assert cluster.get_default_node().port == a_port
        owner = cluster.get_node_from_key(Keys("w").generation(0))
        assert owner is not None
        assert owner.port == b_port
        yield cluster, replica, replica_proc
        await cluster.aclose()
        for node in (a, b, replica):
            await node.aclose()


async def test_on_a_cluster_the_wait_goes_to_the_node_that_ran_the_apply(
    cluster_pair: tuple[RedisCluster, Redis, subprocess.Popen[bytes]],
) -> None:
    cluster, replica, replica_proc = cluster_pair
    keys = Keys("w")  # every key of partition 0 carries its tag {p0}: one slot, as the cluster needs
    store = ProjectionStore(cluster, keys, wait=(1, 5000), partitions=1)
    await store.current_generation(0)
    for seq in range(1, 21):
        assert (await store.apply(1, 0, seq - 1, deltas(seq))).outcome is Outcome.APPLIED
        assert int(await replica.get(keys.watermark(1, 0)) or 0) == seq
    await held_back_by_a_stalled_replica(store, replica, replica_proc, keys, 20)


async def held_back_by_a_stalled_replica(
    store: ProjectionStore, replica: Redis, replica_proc: subprocess.Popen[bytes], keys: Keys, applied: int
) -> None:
    """A replica that stalls (stopped for 0.3 s) holds the next apply back until it has caught up."""
    pause(replica_proc.pid)
    asyncio.get_running_loop().call_later(0.3, os.kill, replica_proc.pid, signal.SIGCONT)
    started = time.monotonic()
    assert (await store.apply(1, 0, applied, deltas(applied + 1))).outcome is Outcome.APPLIED
    assert time.monotonic() - started >= 0.25
    assert int(await replica.get(keys.watermark(1, 0)) or 0) == applied + 1
