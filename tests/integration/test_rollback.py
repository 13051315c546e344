"""A partition whose Redis state goes back in time (a promoted replica that lacked the last applies) is
re-applied from the log: the counts end exact, never short and never doubled.

One real Valkey plays the failover: every key of one partition is DUMPed in one transaction while
events flow, more events are applied, then the dump is RESTOREd over them (and keys created since are
deleted), in one transaction again. That is exactly what a promoted stale replica holds: an earlier
consistent state of the partition's keys (watermark, counts, HyperLogLogs, dedup, dirty set, fence,
lease), since a replica applies the primary's writes in order.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import nats
import pytest
from redis.asyncio import Redis

from contract.cells import Cell, CellLayout
from contract.hours import hour_of, partition_of, system_now_ms
from contract.keys import Keys
from deploy.settings import Settings
from projector.projections.snapshots import open_snapshots
from projector.projections.store import ProjectionStore
from tests.conftest import Server
from tests.helpers import eventually, isolated_settings, metric, settings_env
from tests.integration.conftest import make_stream, production_stack, spawn, wait_ready
from tests.integration.load import Tally, drive, wait_until_done
from tests.integration.test_faults import converged
from tests.integration.workload import mixed_events
from tests.ports import free_port

PARTITIONS = Settings().partitions

pytestmark = pytest.mark.slow

EVENTS = 900
SEED = 21  # drive()'s default: the hours below are the ones it sends


@pytest.fixture
def own_settings(own_nats: Server, own_redis: Server) -> Settings:
    # Snapshots every half second, so one is usually cut past the watermark the partition goes back to.
    return isolated_settings(own_nats.url, own_redis.url, projector_batch=50, snapshot_interval_s=0.5)


@pytest.fixture
async def stack(own_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async for http in production_stack(own_settings):
        yield http


def partition_keys(keys: Keys, gen: int, partition: int, hours: set[int]) -> list[str]:
    """Every key an apply, a lease or a snapshot of `partition` may touch, named by `Keys` only."""
    named = [
        keys.generation(partition),
        keys.fence(partition),
        keys.lease(partition),
        keys.trouble(partition),
        keys.watermark(gen, partition),
        keys.dedup(gen, partition),
        keys.dirty(gen, partition),
        keys.cold(gen, partition),
        keys.gap(gen, partition),
    ]
    for hour in sorted(hours):
        named += [
            CellLayout(keys).users(Cell.of_hour(gen, partition, hour)),
            CellLayout(keys).counts(Cell.of_hour(gen, partition, hour)),
        ]
    return named


@dataclass(frozen=True)
class Dump:
    """A partition's keys as they were at one instant: (key, PTTL, DUMP or None when absent)."""

    watermark: int
    entries: list[tuple[str, int, bytes | None]]


async def dump(redis: Redis, keys: Keys, partition: int, hours: set[int]) -> Dump:
    gen = await ProjectionStore(redis, keys, partitions=PARTITIONS).current_generation(partition)
    named = partition_keys(keys, gen, partition, hours)
    async with redis.pipeline(transaction=True) as pipe:  # one instant: MULTI ... EXEC
        pipe.get(keys.watermark(gen, partition))
        for key in named:
            pipe.pttl(key)
            pipe.dump(key)
        raw_wm, *replies = await pipe.execute()
    entries = [(key, int(replies[2 * i]), replies[2 * i + 1]) for i, key in enumerate(named)]
    return Dump(int(raw_wm or 0), entries)


async def roll_back(redis: Redis, keys: Keys, partition: int, to: Dump) -> int:
    """Put the partition back to `to`, atomically; returns its watermark just before."""
    gen = await ProjectionStore(redis, keys, partitions=PARTITIONS).current_generation(partition)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.get(keys.watermark(gen, partition))
        for key, ttl, value in to.entries:
            if value is None:
                pipe.delete(key)
            else:
                pipe.restore(key, max(ttl, 0), value, replace=True)
        raw_wm, *_ = await pipe.execute()
    return int(raw_wm or 0)


def busiest_partition(now_ms: int, partitions: int) -> tuple[int, set[int]]:
    events = mixed_events(now_ms, EVENTS, SEED)
    counts = [0] * partitions
    for _, user, _ in events:
        counts[partition_of(user, partitions)] += 1
    return counts.index(max(counts)), {hour_of(ts) for ts, _, _ in events}


async def watermark_past(redis: Redis, keys: Keys, partition: int, past: int) -> None:
    store = ProjectionStore(redis, keys, partitions=PARTITIONS)
    gen = await store.current_generation(partition)
    await eventually(lambda: store.watermark(gen, partition), lambda wm: wm > past, timeout=30)


async def snapshot_past(settings: Settings, redis: Redis, partition: int, past: int) -> None:
    """A snapshot is cut past the state the partition will go back to: a partition gone back to
    nothing restores from it, one gone back to an earlier watermark must not (it re-applies the log)."""
    nc = await nats.connect(**settings.nats_options("test-rollback"))
    try:
        snapshots = await open_snapshots(nc, redis, settings)
        assert snapshots is not None
        await eventually(
            lambda: snapshots.manifest(partition), lambda m: m[0] is not None and m[0].watermark > past
        )
    finally:
        await nc.close()


@pytest.mark.parametrize("dump_at", [0, 300], ids=["back-to-empty", "back-to-earlier"])
async def test_a_partition_rolled_back_under_load_is_reapplied_from_the_log_and_ends_exact(
    stack: httpx.AsyncClient, own_redis: Server, own_settings: Settings, dump_at: int
) -> None:
    keys = Keys(own_settings.key_prefix)
    now = system_now_ms()
    partition, hours = busiest_partition(now, own_settings.partitions)
    rollbacks = {"partition": str(partition)}
    before = metric("hourglass_projector_rollbacks_total", rollbacks)
    tally = Tally()
    admin = Redis.from_url(own_redis.url)
    try:
        if dump_at == 0:  # before any event: the partition goes back to having no keys but its lease
            old = await dump(admin, keys, partition, hours)
            assert old.watermark == 0
        load = asyncio.create_task(drive(stack, now, EVENTS, duplicate_every=10, tally=tally))
        if dump_at > 0:
            await wait_until_done(tally, dump_at)
            old = await dump(admin, keys, partition, hours)
        await wait_until_done(tally, dump_at + 300)
        await watermark_past(admin, keys, partition, old.watermark + 100)
        await snapshot_past(own_settings, admin, partition, old.watermark)
        was = await roll_back(admin, keys, partition, old)
        rolled_back_at = time.monotonic()
        assert was > old.watermark, (was, old.watermark)
        await watermark_past(admin, keys, partition, was - 1)  # the lost applies are back
        back_for = time.monotonic() - rolled_back_at
        await load
        await converged(stack, tally, own_settings)
    finally:
        await admin.aclose()
    assert metric("hourglass_projector_rollbacks_total", rollbacks) > before
    print(
        f"\np{partition} rolled back from stream seq {was} to {old.watermark} under load, re-applied "
        f"past it {back_for * 1000:.0f} ms later: {tally.report()} counted=exact"
    )


async def test_rolled_back_while_its_projector_was_sigkilled_the_next_one_ends_exact(
    own_nats: Server, own_redis: Server, tmp_path: Path, reaper: list[subprocess.Popen[bytes]]
) -> None:
    """The projector dies with the primary: the one started after it begins at the rolled-back state."""
    settings = isolated_settings(
        own_nats.url, own_redis.url, http_port=free_port(), projector_batch=50, lease_ttl_s=1.5
    )
    settings = settings.replace(snapshot_interval_s=0.5)
    await make_stream(settings)
    env, log = settings_env(settings), tmp_path / "processes.log"
    server = spawn(["-m", "server"], env, log)
    projector = spawn(["-m", "projector", "run"], env, log)
    reaper += [server, projector]
    base = f"http://127.0.0.1:{settings.http_port}"
    await asyncio.to_thread(wait_ready, base, server)
    keys = Keys(settings.key_prefix)
    now = system_now_ms()
    partition, hours = busiest_partition(now, settings.partitions)
    tally = Tally()
    admin = Redis.from_url(own_redis.url)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            load = asyncio.create_task(drive(http, now, EVENTS, duplicate_every=10, tally=tally))
            await wait_until_done(tally, 300)
            old = await dump(admin, keys, partition, hours)
            await wait_until_done(tally, 600)
            await watermark_past(admin, keys, partition, old.watermark + 100)
            projector.send_signal(signal.SIGKILL)
            projector.wait()
            was = await roll_back(admin, keys, partition, old)
            assert was > old.watermark, (was, old.watermark)
            reaper.append(spawn(["-m", "projector", "run"], env, log))
            await load
            await converged(http, tally, settings)
    finally:
        await admin.aclose()
    print(f"\nprojector SIGKILL + p{partition} rolled back {was} -> {old.watermark}: {tally.report()}")
