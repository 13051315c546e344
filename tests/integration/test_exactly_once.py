"""Exactly-once under retries and several projectors: Idempotency-Key dedup, leases and fencing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import nats
import pytest
from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from api.reader import Reader
from contract.cells import Cell, CellLayout
from contract.hours import HOUR_MS
from contract.keys import Keys
from contract.schema import Event, Kind, batch_of
from deploy.settings import Settings
from projector.fold.deltas import Keyed
from projector.live.balancer import Projector
from projector.projections.leases import Leases
from projector.projections.store import Outcome, ProjectionStore
from projector.replay.driver import replay
from server.app import Clients, create_app
from tests.helpers import eventually, serve, settled
from tests.integration.workload import parse_text
from tests.reference_fold import Message, fold

TS = 9 * HOUR_MS


async def hour9(client: httpx.AsyncClient) -> tuple[int, int, int]:
    return parse_text((await client.get(f"/analytics?timestamp={TS}")).text)


async def stored9(redis: Redis, settings: Settings) -> tuple[int, int, int]:
    t = await Reader(redis, Keys(settings.key_prefix), settings.partitions).hour(9)
    return t.unique_users, t.clicks, t.impressions


@pytest.fixture
async def store(redis: Redis, settings: Settings) -> ProjectionStore:
    return ProjectionStore.from_settings(redis, settings)


@pytest.mark.usefixtures("projector")
async def test_a_post_retried_with_its_idempotency_key_counts_once(
    client: httpx.AsyncClient, nc: NATS, redis: Redis, settings: Settings
) -> None:
    for _ in range(3):
        response = await client.post(
            f"/analytics?timestamp={TS}&user=u1&click", headers={"Idempotency-Key": "order-1"}
        )
        assert response.status_code == 204
    await client.post(f"/analytics?timestamp={TS}&user=u2&click", headers={"Idempotency-Key": "order-2"})
    await client.post(f"/analytics?timestamp={TS}&user=u3&impression")
    await client.post(f"/analytics?timestamp={TS}&user=u3&impression")  # no key: two events
    assert await eventually(lambda: hour9(client), lambda t: t == (3, 2, 2)) == (3, 2, 2)
    # Settled (every retry applied), Redis itself holds it twice in a row.
    await settled(settings, lambda r: stored9(r, settings), lambda t: t == (3, 2, 2), nc=nc, redis=redis)

    await replay(settings, nc, redis)
    assert await stored9(redis, settings) == (3, 2, 2)  # Redis itself, not a cached answer

    keys = [k async for k in redis.scan_iter(match=f"{settings.key_prefix}:*")]
    await redis.delete(*keys)  # Redis lost everything: the rebuild dedupes the same way
    assert await stored9(redis, settings) != (3, 2, 2)  # really gone, for now
    assert await eventually(lambda: stored9(redis, settings), lambda t: t == (3, 2, 2)) == (3, 2, 2)
    await settled(settings, lambda r: stored9(r, settings), lambda t: t == (3, 2, 2), nc=nc, redis=redis)


async def test_a_key_counts_again_only_after_the_window_on_stream_time(store: ProjectionStore) -> None:
    gen = await store.current_generation(0)
    window = store.window_ms
    evs = (Event(TS, "u", Kind.CLICK, key="k"),)
    watermark = 0
    for seq, at in enumerate([0, window, window + 1, 2 * window + 1, 2 * window + 2], start=1):
        deltas = fold([Message(seq, batch_of(events=evs), stream_ms=at)])
        assert deltas.keyed == [Keyed("k", "u", at, 9, Kind.CLICK)]
        result = await store.apply(gen, 0, watermark, deltas)
        assert result.outcome is Outcome.APPLIED
        watermark = result.watermark
    counts = await store._redis.hgetall(CellLayout(store.keys).counts(Cell.of_hour(gen, 0, 9)))
    assert counts == {b"clicks": b"3"}  # at 0, at window + 1, at 2 * window + 2


async def test_a_stale_projector_cannot_write_after_losing_its_lease(
    store: ProjectionStore, redis: Redis, settings: Settings
) -> None:
    keys = Keys(settings.key_prefix)
    old = Leases(redis, keys, "old", ttl_s=0.2)
    new = Leases(redis, keys, "new", ttl_s=5)
    old_epoch = await old.acquire(0)
    assert old_epoch is not None
    assert await new.acquire(0) is None
    gen = await store.current_generation(0)
    deltas = fold([Message(1, batch_of(events=(Event(TS, "u", Kind.CLICK),)))])
    # "old" pauses past its lease; "new" takes the partition and raises the fence.
    new_epoch = await eventually(lambda: new.acquire(0), lambda e: e is not None)
    assert new_epoch is not None
    assert new_epoch > old_epoch
    assert not await old.renew(0)
    stale = await store.apply(gen, 0, 0, deltas, epoch=str(old_epoch))
    assert stale.outcome is Outcome.FENCED
    fresh = await store.apply(gen, 0, 0, deltas, epoch=str(new_epoch))
    assert fresh.outcome is Outcome.APPLIED


async def test_fencing_epochs_keep_rising_after_redis_is_wiped(redis: Redis, settings: Settings) -> None:
    keys = Keys(settings.key_prefix)
    leases = Leases(redis, keys, "a", ttl_s=5)
    first = await leases.acquire(1)
    await redis.delete(keys.lease(1), keys.fence(1))
    second = await Leases(redis, keys, "b", ttl_s=5).acquire(1)
    assert first is not None
    assert second is not None
    assert second > first


class Pool:
    """Projectors started on demand, each on its own NATS connection, as separate processes would be."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis
        self.members: list[tuple[Projector, asyncio.Event, asyncio.Task[None], NATS]] = []

    async def start(self) -> Projector:
        own = await nats.connect(self.settings.nats_url)
        projector = Projector(self.settings, own, self.redis)
        stop = asyncio.Event()
        self.members.append((projector, stop, asyncio.create_task(projector.run(stop)), own))
        return projector

    async def stop_all(self) -> None:
        for _, stop, task, own in self.members:
            stop.set()
            await task
            await own.close()


@pytest.fixture
async def pool(settings: Settings, client: httpx.AsyncClient, redis: Redis) -> AsyncIterator[Pool]:
    pool = Pool(settings, redis)
    yield pool
    await pool.stop_all()


async def test_projectors_share_partitions_and_each_is_applied_by_one(
    settings: Settings, client: httpx.AsyncClient, pool: Pool
) -> None:
    first = await pool.start()
    await eventually(lambda: held([first]), lambda h: h == [[0, 1, 2, 3]])
    second, third = await pool.start(), await pool.start()

    def fair(h: list[list[int]]) -> bool:
        flat = sorted(p for ps in h for p in ps)
        return flat == [0, 1, 2, 3] and sorted(map(len, h)) == [1, 1, 2]

    await eventually(lambda: held([first, second, third]), fair)
    for i in range(120):
        assert (await client.post(f"/analytics?timestamp={TS}&user=user{i}&click")).status_code == 204
    await eventually(lambda: hour9(client), lambda t: t[1] == 120)
    # Each partition applied by one projector: settled, nothing was counted twice.
    await settled(settings, lambda r: stored9(r, settings), lambda t: t[1:] == (120, 0), redis=pool.redis)


async def held(projectors: list[Projector]) -> list[list[int]]:
    return [sorted(p.running) for p in projectors]


@pytest.fixture
async def slow_expiring_client(
    settings: Settings, nc: NATS, redis: Redis
) -> AsyncIterator[httpx.AsyncClient]:
    """Reads may stay cached for a minute, so any freshness must come from change notices."""
    async for http in serve(create_app(settings.replace(read_staleness_s=60.0), Clients(nc=nc, redis=redis))):
        yield http


async def test_cached_reads_follow_change_notices_and_never_run_ahead_of_the_writes(
    slow_expiring_client: httpx.AsyncClient, pool: Pool
) -> None:
    http = slow_expiring_client
    await pool.start()
    sent = 0
    seen: list[int] = []

    async def writer() -> None:
        nonlocal sent
        for i in range(300):
            sent += 1  # counted before it is sent: a stored event may be applied before its 204 arrives
            assert (await http.post(f"/analytics?timestamp={TS}&user=w{i}&click")).status_code == 204

    async def reader() -> None:
        while sent < 300:
            clicks = (await hour9(http))[1]
            assert clicks <= sent
            seen.append(clicks)
            await asyncio.sleep(0)  # an in-process cached GET may never yield on its own

    await asyncio.gather(writer(), reader())
    await eventually(lambda: hour9(http), lambda t: t[1] == 300)
    assert len(set(seen)) > 3, "reads should have followed the writes, not sat on one cached value"
