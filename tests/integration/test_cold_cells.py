"""Quarter-hours and day rollups through the cold path: snapshot entries, eviction and thaw, restore after
Redis lost everything (FLUSHALL): every cell comes back byte for byte, day rollups never leave Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import cast

import pytest
from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from contract.buckets import QUARTER_MS, QUARTERS_PER_HOUR, day_tokens, phases_text, quarter_of, quarter_token
from contract.cells import Cell, CellLayout
from contract.hours import HOUR_MS, hour_token
from contract.keys import Keys
from contract.schema import HourState
from deploy.settings import Settings
from projector.log.stream_config import ensure_stream
from projector.projections.hot_window import Evictor
from projector.projections.snapshots import Snapshots, open_snapshots
from projector.projections.store import ProjectionStore, Thawed
from tests.conftest import Server
from tests.helpers import isolated_settings
from tests.integration.cells import expected, stored

BASE = 20_000 * 24 + 17  # 17:00 UTC: its hours cross Kolkata's midnight (18:30 UTC)
HOURS = range(BASE, BASE + 4)
PHASES = (0, 1110)
P = 0
WM = 10

Cells = dict[str, tuple[bytes | None, dict[bytes, bytes]]]


@pytest.fixture
def settings(nats_server: Server, own_redis: Server) -> Settings:
    return isolated_settings(nats_server.url, own_redis.url, partitions=1)


@pytest.fixture
async def redis(own_redis: Server) -> AsyncIterator[Redis]:
    client = Redis.from_url(own_redis.url)
    yield client
    await client.aclose()


def events() -> Iterator[tuple[int, str, str]]:
    for i in range(len(HOURS) * 60):
        yield (
            BASE * HOUR_MS + i * QUARTER_MS // 15 + 500,
            f"u{i * 7 % 41}",
            "click" if i % 4 else "impression",
        )


async def seed(redis: Redis, keys: Keys) -> list[str]:
    """What the apply writes per event (its hour, its quarter-hour, a day rollup per phase), marked dirty
    as the apply marks it; returns every cell token."""
    tokens: set[str] = set()
    for at, user, kind in events():
        hour = at // HOUR_MS
        quarter = quarter_of(at)
        for token in (hour_token(hour), quarter_token(hour, quarter), *day_tokens(hour, quarter, PHASES)):
            tokens.add(token)
            await redis.pfadd(CellLayout(keys).users(Cell(1, P, token)), user)
            await redis.hincrby(CellLayout(keys).counts(Cell(1, P, token)), f"{kind}s", 1)
    dirty = {t: WM for t in tokens if len(t) != 12}  # hours and days: quarters ride with their hour
    await redis.zadd(keys.dirty(1, P), dirty)
    await redis.set(keys.generation(P), 1)
    await redis.set(keys.watermark(1, P), WM)
    return sorted(tokens)


async def cells(redis: Redis, keys: Keys, tokens: list[str]) -> Cells:
    return {
        t: (
            cast(bytes | None, await redis.get(CellLayout(keys).users(Cell(1, P, t)))),
            await redis.hgetall(CellLayout(keys).counts(Cell(1, P, t))),  # type: ignore[misc]
        )
        for t in tokens
    }


async def snapshotted(nc: NATS, redis: Redis, settings: Settings) -> tuple[Snapshots, ProjectionStore]:
    await ensure_stream(nc, settings)
    snapshots = await open_snapshots(nc, redis, settings)
    assert snapshots is not None
    store = ProjectionStore.from_settings(redis, settings)
    written = await snapshots.write(1, P)
    assert written is not None
    assert written.watermark == WM
    return snapshots, store


async def seeded_and_snapshotted(
    nc: NATS, redis: Redis, settings: Settings
) -> tuple[Keys, list[str], Cells, Snapshots, ProjectionStore]:
    """The seeded cells' keys, tokens and values, then snapshotted."""
    keys = Keys(settings.key_prefix)
    tokens = await seed(redis, keys)
    before = await cells(redis, keys, tokens)
    snapshots, store = await snapshotted(nc, redis, settings)
    return keys, tokens, before, snapshots, store


async def test_an_hour_evicted_and_thawed_keeps_its_quarters_and_day_rollups_never_leave(
    nc: NATS, redis: Redis, settings: Settings
) -> None:
    keys, tokens, before, snapshots, store = await seeded_and_snapshotted(nc, redis, settings)
    manifest, _ = await snapshots.manifest(P)
    assert manifest is not None
    days = [t for t in tokens if t.startswith("d")]
    assert len(days) == 3
    assert set(days) <= set(manifest.hours)
    assert {hour_token(h) for h in HOURS} <= set(manifest.hours)
    entry = await snapshots.entry(P, hour_token(BASE + 1), WM)
    assert len(entry.quarters) == QUARTERS_PER_HOUR
    assert entry.quarters[2].hll == before[quarter_token(BASE + 1, 2)][0]

    assert await Evictor(store, snapshots, 1, P).run("", WM, BASE + 2) == 2
    gone = [t for t in tokens if not t.startswith("d") and int(t[:10]) < int(hour_token(BASE + 2))]
    assert len(gone) == 2 * (1 + QUARTERS_PER_HOUR)
    assert not await redis.exists(*(CellLayout(keys).users(Cell(1, P, t)) for t in gone))
    assert await cells(redis, keys, [t for t in tokens if t not in gone]) == {
        t: v for t, v in before.items() if t not in gone
    }

    thawed = [Thawed(h, WM, await snapshots.entry(P, hour_token(h), WM)) for h in (BASE, BASE + 1)]
    assert await store.thaw(1, P, "", WM, thawed)
    assert await cells(redis, keys, tokens) == before
    assert await store.cold_hours(1, P) == {}


async def test_an_entry_from_before_quarter_hours_thaws_without_quarter_keys(
    redis: Redis, settings: Settings
) -> None:
    keys = Keys(settings.key_prefix)
    store = ProjectionStore.from_settings(redis, settings)
    await redis.set(keys.generation(P), 1)
    await redis.set(keys.watermark(1, P), WM)
    await redis.pfadd(CellLayout(keys).users(Cell.of_hour(1, P, BASE)), "old")
    await redis.hset(CellLayout(keys).counts(Cell.of_hour(1, P, BASE)), "clicks", 3)
    assert await store.evict(1, P, "", WM, [(BASE, 4)]) == 1
    await redis.pfadd(CellLayout(keys).users(Cell(1, P, quarter_token(BASE, 1))), "stale")  # must not survive
    old = HourState(b"", 3, 0)
    assert await store.thaw(1, P, "", WM, [Thawed(BASE, 4, old)])
    assert int(await redis.hget(CellLayout(keys).counts(Cell.of_hour(1, P, BASE)), "clicks") or 0) == 3
    quarters = [quarter_token(BASE, q) for q in range(QUARTERS_PER_HOUR)]
    assert not await redis.exists(*(CellLayout(keys).users(Cell(1, P, t)) for t in quarters))


async def test_a_partition_restored_from_its_snapshot_after_flushall_has_exact_quarters_and_days(
    nc: NATS, redis: Redis, settings: Settings
) -> None:
    keys, tokens, before, snapshots, store = await seeded_and_snapshotted(nc, redis, settings)
    await redis.flushall()
    await redis.set(keys.generation(P), 1)
    await redis.set(keys.phases(1, P), phases_text(PHASES))  # what the worker records before restoring

    assert await snapshots.restore(1, P, "", store, hot_from=BASE + 1) == WM
    assert await store.watermark(1, P) == WM
    assert await store.cold_hours(1, P) == {BASE: WM}
    hot = [t for t in tokens if not t.startswith(hour_token(BASE))]
    assert await cells(redis, keys, hot) == {t: before[t] for t in hot}  # every day rollup among them
    assert any(t.startswith("d") for t in hot)
    entry = await snapshots.entry(P, hour_token(BASE), WM)
    assert await store.thaw(1, P, "", WM, [Thawed(BASE, WM, entry)])
    assert await cells(redis, keys, tokens) == before


async def test_a_restore_into_a_generation_keeping_other_day_starts_rebuilds_their_days_from_hours(
    nc: NATS, redis: Redis, settings: Settings
) -> None:
    keys = Keys(settings.key_prefix)
    await seed(redis, keys)
    snapshots, store = await snapshotted(nc, redis, settings)
    await redis.flushall()
    await redis.set(keys.generation(P), 1)
    new_york = (0, 240)  # 04:00 UTC: New York's summer days; Kolkata's are no longer kept
    await redis.set(keys.phases(1, P), phases_text(new_york))

    assert await snapshots.restore(1, P, "", store, hot_from=BASE + 1) == WM
    days = sorted({d for h in HOURS for q in range(QUARTERS_PER_HOUR) for d in day_tokens(h, q, new_york)})
    assert len(days) == 2
    for day in days:
        assert await stored(redis, keys, 1, day, P) == expected(events(), day, P, 1)
    kolkata = day_tokens(BASE + 2, 0, PHASES)[1]
    assert not await redis.exists(CellLayout(keys).users(Cell(1, P, kolkata)))
