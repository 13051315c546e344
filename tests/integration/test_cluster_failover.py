"""Faults of a real Valkey cluster (3 primaries, one replica each; node timeouts of 1 s and 5 s) under
keyed, retried POST load through the stack, each process with its role's credentials: a SIGKILLed
primary, and a primary whose replica is promoted without its last applies (a real rollback). The
counts end exact either way."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from contract.hours import hour_of, system_now_ms
from contract.keys import Keys
from contract.slots import partition_slot
from deploy.projections_client import ProjectionsClient, connect
from deploy.redis_nodes import parse_redis_nodes
from deploy.valkey_cluster import DEFAULT_NODE_TIMEOUT_MS, _client, _run
from projector.projections.store import ProjectionStore
from tests.conftest import Server
from tests.helpers import eventually, metric, pause
from tests.integration.conftest import Roles, production_stack, roles_on
from tests.integration.load import ClosedHour, Tally, drive, wait_until_done
from tests.integration.test_faults import converged
from tests.integration.test_rollback import busiest_partition
from tests.integration.valkey_cluster import ValkeyCluster, running_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

EVENTS = 3000


@pytest.fixture(params=[1000, DEFAULT_NODE_TIMEOUT_MS], ids=lambda ms: f"node-timeout-{ms / 1000:.0f}s")
def valkey_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ValkeyCluster]:
    """The fixture's 1 s node timeout, and the 5 s that `./just cluster-up` runs with."""
    with running_cluster(tmp_path / "vc", node_timeout_ms=request.param) as cluster:
        yield cluster


@pytest.fixture
def roles(own_nats: Server, valkey_cluster: ValkeyCluster) -> Roles:
    return roles_on(own_nats, valkey_cluster.role_url, projector_batch=50)


@pytest.fixture
async def stack(roles: Roles) -> AsyncIterator[httpx.AsyncClient]:
    async for http in production_stack(roles.admin, ready_timeout=60, roles=roles):
        yield http


def admin_of(cluster: ValkeyCluster, port: int) -> redis.Redis:
    return _client(next(n for n in parse_redis_nodes(cluster.url) if n.port == port))


async def holder(cluster: ValkeyCluster, partition: int) -> tuple[int, int]:
    """(primary port, replica port) of the partition's slot, once a node tells both (a replica just
    formed may not be gossiped yet)."""
    found = await eventually(lambda: asyncio.to_thread(slot_holder, cluster, partition), bool)
    assert found is not None
    return found


def slot_holder(cluster: ValkeyCluster, partition: int) -> tuple[int, int] | None:
    slot = partition_slot(partition)
    live = next(p for p in cluster.ports if cluster.procs[p].poll() is None)
    raw = _run(admin_of(cluster, live), "CLUSTER SLOTS")
    assert isinstance(raw, list)  # [low, high, [host, port, id, ...] of the primary, then of replicas]
    for low, high, primary, *replicas in raw:
        if int(low) <= slot <= int(high):
            return (int(primary[1]), int(replicas[0][1])) if replicas else None
    return None


def is_primary(cluster: ValkeyCluster, port: int) -> bool:
    role = _run(admin_of(cluster, port), "ROLE")
    assert isinstance(role, list)
    return bytes(role[0]) == b"master"


@dataclass
class Reads:
    """GETs of the current hour, one after another, while a fault runs: when each began and ended,
    and its status (0: no answer)."""

    seen: list[tuple[float, float, int]] = field(default_factory=list)

    async def run(
        self, http: httpx.AsyncClient, now_ms: int, stop: asyncio.Event, closed: ClosedHour
    ) -> None:
        """Each round: the current hour, then a closed hour whose every 200 must show its settled counts."""
        while not stop.is_set():
            began = time.monotonic()
            try:
                status = (await http.get("/analytics", params={"timestamp": now_ms})).status_code
            except httpx.TransportError:
                status = 0
            self.seen.append((began, time.monotonic(), status))
            began = time.monotonic()
            answer = await closed.check(http)
            self.seen.append((began, time.monotonic(), answer.status_code if answer else 0))
            await asyncio.sleep(0.02)  # a client's poll interval, not a wait for consistency

    def after(self, since: float) -> list[tuple[float, float, int]]:
        return [read for read in self.seen if read[1] >= since]

    def window(self, since: float) -> tuple[int, float, float]:
        """(non-200 answers, seconds from `since` to the end of the last of them, slowest GET)."""
        reads = self.after(since)
        bad = [end for _, end, status in reads if status != 200]
        slowest = max((end - began for began, end, _ in reads), default=0.0)
        return len(bad), (max(bad) - since) if bad else 0.0, slowest

    def unexpected(self) -> list[int]:
        """Anything but a 200 or a prompt 503 (with Retry-After, checked by the server's tests)."""
        return [status for _, _, status in self.seen if status not in (200, 503)]


async def watermark(client: ProjectionsClient, keys: Keys, partitions: int, partition: int) -> int:
    store = ProjectionStore(client, keys, partitions=partitions)
    gen = await store.live_generation(partition)
    return 0 if gen is None else await store.watermark(gen, partition)


async def test_a_primary_sigkilled_under_load_is_replaced_and_the_counts_end_exact(
    stack: httpx.AsyncClient, valkey_cluster: ValkeyCluster, roles: Roles
) -> None:
    settings = roles.admin
    now = system_now_ms()
    partition, _ = busiest_partition(now, settings.partitions)
    primary, replica = await holder(valkey_cluster, partition)
    tally, reads, stop = Tally(), Reads(), asyncio.Event()
    closed = await ClosedHour.written(stack, hour_of(now) - 10)
    load = asyncio.create_task(drive(stack, now, EVENTS, duplicate_every=10, tally=tally))
    await wait_until_done(tally, 300)
    probe = asyncio.create_task(reads.run(stack, now, stop, closed))
    killed_at = time.monotonic()
    valkey_cluster.kill(primary)
    await eventually(lambda: asyncio.to_thread(is_primary, valkey_cluster, replica), bool, 30)
    promoted = time.monotonic()
    # Reads go on until 20 GETs began after the promotion, so the window's end is seen.
    await eventually(lambda: asyncio.sleep(0, reads.after(promoted)), lambda r: len(r) >= 20, 60)
    stop.set()
    await probe
    await load
    await converged(stack, tally, settings)
    refused, window, slowest = reads.window(killed_at)
    assert reads.unexpected() == []
    assert closed.wrong == [], (closed.counts, closed.wrong[:5])
    assert tally.unavailable == 0, tally.report()  # POSTs never touch Redis
    assert window < 15, window
    print(
        f"\nprimary :{primary} (p{partition}) SIGKILLed: replica :{replica} promoted in "
        f"{promoted - killed_at:.1f} s; {len(reads.after(killed_at))} GETs since: {refused} 503, the "
        f"last ending {window:.1f} s after the kill, slowest {slowest:.2f} s; {tally.report()} counted=exact"
    )


async def test_a_replica_promoted_without_the_last_applies_is_caught_up_from_the_log(
    stack: httpx.AsyncClient, valkey_cluster: ValkeyCluster, roles: Roles
) -> None:
    """The replica is SIGSTOPped and dropped by its primary (a 1 MB replica output limit and megabytes
    of filler on the partition's slot), applies land on the primary alone, the primary is SIGKILLed and
    the replica, SIGCONTed, is promoted: the partition's watermark went back with its counts."""
    settings = roles.admin
    keys = Keys(settings.key_prefix)
    now = system_now_ms()
    partition, _ = busiest_partition(now, settings.partitions)
    primary, replica = await holder(valkey_cluster, partition)
    before = metric("hourglass_projector_rollbacks_total", {"partition": str(partition)})
    tally = Tally()
    client = connect(settings)
    pid = valkey_cluster.procs[replica].pid
    try:
        load = asyncio.create_task(drive(stack, now, EVENTS, duplicate_every=10, tally=tally))
        await wait_until_done(tally, 300)
        pause(pid)
        node = admin_of(valkey_cluster, primary)
        # The filler goes first: whatever the kernel still holds for the replica ends before the applies.
        _run(node, "CONFIG", "SET", "client-output-buffer-limit", "replica 1mb 1mb 0")
        await asyncio.to_thread(drop_replica, node, partition)
        dropped_at = await watermark(client, keys, settings.partitions, partition)
        lost = await eventually(
            lambda: watermark(client, keys, settings.partitions, partition),
            lambda wm: wm > dropped_at + 100,
            30,
        )
        valkey_cluster.kill(primary)
        os.kill(pid, signal.SIGCONT)
        await eventually(lambda: asyncio.to_thread(is_primary, valkey_cluster, replica), bool, 30)
        went_back_to = await eventually(
            lambda: watermark(client, keys, settings.partitions, partition), lambda wm: wm > 0, 30
        )
        await load
        await converged(stack, tally, settings)
    finally:
        await client.aclose()
    assert metric("hourglass_projector_rollbacks_total", {"partition": str(partition)}) > before
    print(
        f"\np{partition}: primary :{primary} SIGKILLed at watermark >= {lost} (replica dropped at "
        f"{dropped_at}), replica :{replica} promoted at watermark {went_back_to}: {tally.report()} "
        "counted=exact"
    )


def drop_replica(node: redis.Redis, partition: int) -> None:
    """Filler on the partition's slot, 4 MB at a time, until the primary drops its stopped replica
    (the kernel's socket buffers take the first megabytes); then the filler is deleted."""
    fillers: list[str] = []
    while int(node.info("replication")["connected_slaves"]):
        assert len(fillers) < 64, "the primary kept its stopped replica"
        fillers.append(f"filler:{{p{partition}}}:{len(fillers)}")
        _run(node, "SET", fillers[-1], b"x" * (4 << 20))
    node.delete(*fillers)
