"""Repairs and late events keep quarter-hours and day rollups exact: a single-hour replay of a damaged
hour rebuilds its quarters and the UTC and Asia/Kolkata days overlapping it; a late event for a cold
hour lands in its quarter-hour and its day rollups."""

from __future__ import annotations

import httpx
import pytest
from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from contract.buckets import QUARTER_MS, QUARTERS_PER_HOUR, day_tokens, phases_text, quarter_token
from contract.cells import Cell, CellLayout
from contract.hours import HOUR_MS, hour_token
from contract.keys import Keys
from contract.schema import Event, Kind, batch_of
from deploy.settings import Settings
from projector.log.stream_config import ensure_stream
from projector.projections.hot_window import Evictor, apply_thawing
from projector.projections.snapshots import open_snapshots
from projector.projections.store import Outcome, ProjectionStore
from projector.replay.single_hour import replay_hour
from tests.conftest import Server
from tests.helpers import eventually, isolated_settings
from tests.integration.cells import Raw, expected, stored
from tests.integration.workload import post_path
from tests.reference_fold import Message, fold

BASE = 20_000 * 24 + 17  # 17:00 UTC; Asia/Kolkata's days start at 18:30 UTC
ZONES = "UTC,Asia/Kolkata"


@pytest.fixture
def settings(nats_server: Server, redis_server: Server) -> Settings:
    return isolated_settings(nats_server.url, redis_server.url, day_zones=ZONES)


def raw_events() -> list[Raw]:
    """Three hours of events, some in every quarter-hour, with users repeating across them."""
    return [
        (
            BASE * HOUR_MS + i * 3 * QUARTER_MS // 20 + 999,
            f"u{i * 5 % 23}",
            "click" if i % 3 else "impression",
        )
        for i in range(3 * 4 * 20 // 3)
    ]


def tokens_of(hour: int, phases: tuple[int, ...]) -> list[str]:
    days = {d for q in range(QUARTERS_PER_HOUR) for d in day_tokens(hour, q, phases)}
    return [hour_token(hour), *(quarter_token(hour, q) for q in range(QUARTERS_PER_HOUR)), *sorted(days)]


@pytest.mark.usefixtures("projector")
async def test_a_single_hour_repair_leaves_its_quarters_and_the_utc_and_kolkata_days_exact(
    settings: Settings, client: httpx.AsyncClient, nc: NATS, redis: Redis
) -> None:
    events = raw_events()
    for ts, user, kind in events:
        assert (await client.post(post_path(ts, user, kind))).status_code == 204
    keys = Keys(settings.key_prefix)
    store = ProjectionStore.from_settings(redis, settings)
    gen = await store.current_generation(0)
    phases = settings.day_phases
    assert len(phases) == 2
    every = [t for h in range(BASE, BASE + 3) for t in tokens_of(h, phases)]
    parts = range(settings.partitions)

    async def cells() -> dict[tuple[str, int], object]:
        return {(t, p): await stored(redis, keys, gen, t, p) for t in every for p in parts}

    truth = {(t, p): expected(events, t, p, settings.partitions) for t in every for p in parts}
    await eventually(cells, lambda got: got == truth)

    damaged = BASE + 1  # 18:00 UTC: its last two quarter-hours open a Kolkata day
    for p in parts:  # a bug, or a hand edit, corrupts the hour, its quarters and its days
        for token in tokens_of(damaged, phases):
            await redis.hincrby(CellLayout(keys).counts(Cell(gen, p, token)), "clicks", 7)
            await redis.pfadd(CellLayout(keys).users(Cell(gen, p, token)), "intruder")
    assert await cells() != truth

    await replay_hour(settings, nc, redis, damaged)
    assert await cells() == truth


async def test_a_late_event_for_a_cold_hour_lands_in_its_quarter_hour_and_its_day_rollups(
    nats_server: Server, redis_server: Server, nc: NATS, redis: Redis
) -> None:
    settings = isolated_settings(nats_server.url, redis_server.url, day_zones=ZONES, partitions=1)
    await ensure_stream(nc, settings)
    keys = Keys(settings.key_prefix)
    store = ProjectionStore.from_settings(redis, settings)
    snapshots = await open_snapshots(nc, redis, settings)
    assert snapshots is not None
    phases = settings.day_phases
    await redis.set(keys.generation(0), 1)
    await redis.set(keys.phases(1, 0), phases_text(phases))  # what the worker records before applying
    events = raw_events()
    first = Message(1, batch_of(events=tuple(Event(ts, user, Kind(kind)) for ts, user, kind in events)))
    assert (await store.apply(1, 0, 0, fold([first]))).outcome is Outcome.APPLIED
    assert await snapshots.write(1, 0) is not None
    assert await Evictor(store, snapshots, 1, 0).run("", 1, BASE + 3) == 3

    late: Raw = (
        (BASE + 1) * HOUR_MS + 2 * QUARTER_MS + 5,
        "late",
        "click",
    )  # the first quarter of a Kolkata day
    second = Message(2, batch_of(events=(Event(late[0], late[1], Kind.CLICK),)))
    result = await apply_thawing(store, snapshots, 1, 0, 1, fold([second]))
    assert result.outcome is Outcome.APPLIED
    assert await store.cold_hours(1, 0) == {BASE: 1, BASE + 2: 1}
    every = tokens_of(BASE + 1, phases)
    got = {t: await stored(redis, keys, 1, t, 0) for t in every}
    assert got == {t: expected([*events, late], t, 0, 1) for t in every}
