"""A day rollup rebuilt from its hours and quarter-hours (rebuild_day.lua) equals the union of exactly the
events of its 24 hours, whatever it held before; cold components are thawed first; fences hold."""

from __future__ import annotations

from typing import cast

from redis.asyncio import Redis

from contract import hll
from contract.buckets import (
    DAY_MS,
    QUARTER_MS,
    day_components,
    day_token,
    parse_day_token,
    quarter_of,
    quarter_token,
)
from contract.cells import Cell, CellLayout
from contract.hours import HOUR_MS, hour_token
from contract.keys import Keys
from contract.schema import CellState, HourState
from deploy.settings import Settings
from projector.projections.hot_window import rebuild_day_thawing
from projector.projections.snapshots import Snapshots
from projector.projections.store import DayOutcome, ProjectionStore

DAY = 20_000 * 24 * HOUR_MS  # a UTC midnight
KOLKATA = 1110  # minute of the UTC day at which Asia/Kolkata's days start
P = 0


def events() -> list[tuple[int, str, str]]:
    """(timestamp, user, kind) spread over two UTC days, including both sides of Kolkata's midnight."""
    found = []
    for i in range(0, 2 * 24 * 4 * 3):
        at = DAY - HOUR_MS + i * QUARTER_MS // 3 + 7_000
        found.append((at, f"u{i % 37}", "clicks" if i % 3 else "impressions"))
    return found


async def seed(redis: Redis, keys: Keys, gen: int, evs: list[tuple[int, str, str]]) -> None:
    """What the apply writes for each event: its hour and its quarter-hour."""
    for at, user, kind in evs:
        hour = at // HOUR_MS
        for token in (hour_token(hour), quarter_token(hour, quarter_of(at))):
            await redis.pfadd(CellLayout(keys).users(Cell(gen, P, token)), user)
            await redis.hincrby(CellLayout(keys).counts(Cell(gen, P, token)), kind, 1)


async def assert_exact(
    redis: Redis, keys: Keys, gen: int, token: str, evs: list[tuple[int, str, str]]
) -> None:
    begin = parse_day_token(token)
    inside = [e for e in evs if begin <= e[0] < begin + DAY_MS]
    assert inside
    raw = cast(bytes | None, await redis.get(CellLayout(keys).users(Cell(gen, P, token))))
    assert hll.registers(raw or b"") == hll.sketch(u for _, u, _ in inside)
    counts = await redis.hgetall(CellLayout(keys).counts(Cell(gen, P, token)))
    assert int(counts.get(b"clicks", 0)) == sum(1 for e in inside if e[2] == "clicks")
    assert int(counts.get(b"impressions", 0)) == sum(1 for e in inside if e[2] == "impressions")
    assert await redis.zscore(keys.dirty(gen, P), token) is not None


async def seeded(
    redis: Redis, settings: Settings
) -> tuple[Keys, ProjectionStore, list[tuple[int, str, str]]]:
    """Generation 1 of partition P live, holding `events()` in every cell (hours, quarters, days)."""
    keys = Keys(settings.key_prefix)
    store = ProjectionStore(redis, keys, partitions=1)
    evs = events()
    await seed(redis, keys, 1, evs)
    await redis.set(keys.generation(P), 1)
    return keys, store, evs


async def test_a_damaged_day_rollup_is_rebuilt_exactly_from_its_components(
    redis: Redis, settings: Settings
) -> None:
    keys, store, evs = await seeded(redis, settings)
    await redis.set(keys.fence(P), "mine")
    await redis.set(keys.watermark(1, P), 40)
    utc, kolkata = day_token(DAY), day_token(DAY - DAY_MS + KOLKATA * 60_000)
    await redis.pfadd(CellLayout(keys).users(Cell(1, P, utc)), "a-stranger")  # damage
    await redis.hset(CellLayout(keys).counts(Cell(1, P, utc)), "clicks", 99_999)
    for token in (utc, kolkata):
        result = await store.rebuild_day(1, P, token, "mine")
        assert result.outcome is DayOutcome.REBUILT
        await assert_exact(redis, keys, 1, token, evs)
    assert (await store.rebuild_day(1, P, utc, "theirs")).outcome is DayOutcome.FENCED
    assert (await store.rebuild_day(2, P, utc, "mine")).outcome is DayOutcome.GENERATION_MOVED
    assert (await store.rebuild_day(2, P, utc, "", live=False)).outcome is DayOutcome.REBUILT


class HeldEntries:
    """The snapshot store's entries, as Snapshots.entry gives them."""

    def __init__(self) -> None:
        self.held: dict[tuple[int, str, int], HourState] = {}

    async def entry(self, partition: int, token: str, at: int) -> HourState:
        return self.held[(partition, token, at)]


async def test_cold_components_are_thawed_with_their_quarters_before_the_day_is_rebuilt(
    redis: Redis, settings: Settings
) -> None:
    keys, store, evs = await seeded(redis, settings)
    await redis.set(keys.watermark(1, P), 40)
    snapshots = HeldEntries()
    cold_hour = (DAY + 18 * HOUR_MS) // HOUR_MS  # its first two quarters end the Kolkata day
    tokens = [hour_token(cold_hour)] + [quarter_token(cold_hour, q) for q in range(4)]
    cells: list[tuple[bytes | None, int, int]] = []
    for token in tokens:
        raw = cast(bytes | None, await redis.get(CellLayout(keys).users(Cell(1, P, token))))
        counts = await redis.hgetall(CellLayout(keys).counts(Cell(1, P, token)))
        cells.append((raw, int(counts.get(b"clicks", 0)), int(counts.get(b"impressions", 0))))
    quarters = tuple(CellState(*cell) for cell in cells[1:])
    snapshots.held[(P, tokens[0], 33)] = HourState(*cells[0], quarters=quarters)
    assert await store.evict(1, P, "", 40, [(cold_hour, 33)]) == 1
    assert not await redis.exists(*(CellLayout(keys).users(Cell(1, P, t)) for t in tokens))
    kolkata = day_token(DAY + KOLKATA * 60_000 - DAY_MS)
    assert any(t.startswith(tokens[0]) for t in day_components(kolkata))
    assert (await store.rebuild_day(1, P, kolkata)).cold == ((tokens[0], 33),)
    outcome = await rebuild_day_thawing(store, cast(Snapshots, snapshots), 1, P, kolkata)
    assert outcome is DayOutcome.REBUILT
    await assert_exact(redis, keys, 1, kolkata, evs)
    assert await store.cold_hours(1, P) == {}
    # Marked changed: the next snapshot takes it again, and the hot window moves it out again.
    assert await redis.zscore(keys.dirty(1, P), tokens[0]) == 40
