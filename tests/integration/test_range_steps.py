"""A long range read goes to Redis in bounded steps and is still one view: a replay's generation switch
between two steps is detected and the whole range is read again from the new generation, on one node
and split per partition alike, against a real Valkey."""

from __future__ import annotations

import time
from typing import Any

import pytest
from redis.asyncio import Redis

from api import range_read
from api.range_read import RangeReads, Totals
from api.ranges import parse_range
from api.reader import Reader
from contract.cells import Cell, CellLayout
from contract.hours import HOUR_MS, hour_token
from contract.keys import Keys

HOURS = 6
FIRST = 493_900
PARTITIONS = 2


async def seed(
    redis: Redis, keys: Keys, gen: int, clicks_per_hour: int, partitions: int = PARTITIONS
) -> None:
    """Every hour of every partition of `gen`: its own users (u<gen>-<p>-<h>-<i>), a click each."""
    layout = CellLayout(keys)
    for p in range(partitions):
        await redis.set(keys.phases(gen, p), "0")
        for h in range(FIRST, FIRST + HOURS):
            cell = Cell(gen, p, hour_token(h))
            users = [f"u{gen}-{p}-{h}-{i}" for i in range(clicks_per_hour)]
            await redis.pfadd(layout.users(cell), *users)
            await redis.hset(layout.counts(cell), "clicks", clicks_per_hour)


@pytest.mark.parametrize("split", [False, True], ids=["one node", "split"])
async def test_a_generation_switch_between_steps_rereads_the_range_from_the_new_generation(
    redis: Redis, monkeypatch: pytest.MonkeyPatch, split: bool
) -> None:
    keys = Keys(f"steps{time.monotonic_ns()}")
    await seed(redis, keys, 1, 2)
    await seed(redis, keys, 2, 3)
    monkeypatch.setattr(range_read, "STEP_CELLS", PARTITIONS)  # a step reads PARTITIONS cells
    steps = HOURS // (PARTITIONS if split else 1)  # split: a call reads one partition, so 2 rows a step
    reader = Reader(redis, keys, PARTITIONS, split_by_partition=split)
    calls: list[int] = []

    async def scripts(batch: list[tuple[list[str], list[str | int]]]) -> list[Any]:
        calls.append(len(batch))
        found = await reader._range_calls(batch)
        if len(calls) == 1:  # a replay switches every partition between the first step and the next
            for p in range(PARTITIONS):
                await redis.set(keys.generation(p), 2)
        return found

    ranges = RangeReads(redis, keys, PARTITIONS, None, split)
    rows = [[(h * HOUR_MS, (h + 1) * HOUR_MS)] for h in range(FIRST, FIRST + HOURS)]
    found, total = await ranges.read(rows, scripts)
    assert found == [Totals(3 * PARTITIONS, 3 * PARTITIONS, 0)] * HOURS  # every row from generation 2
    assert total == Totals(3 * PARTITIONS * HOURS, 3 * PARTITIONS * HOURS, 0)
    # The first step, the second refused, then the whole range again: its rows, then the total alone.
    assert len(calls) == 2 + steps + 1
    again, _ = await RangeReads(redis, keys, PARTITIONS, None, split).read(rows, scripts)
    assert again == found


async def test_a_long_range_is_read_in_steps_of_bounded_cells(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = Keys(f"steps{time.monotonic_ns()}")
    await seed(redis, keys, 1, 2)
    monkeypatch.setattr(range_read, "STEP_CELLS", 2 * PARTITIONS)  # two rows per step
    reader = Reader(redis, keys, PARTITIONS)
    steps: list[int] = []

    async def scripts(batch: list[tuple[list[str], list[str | int]]]) -> list[Any]:
        steps.append(len(batch))
        return await reader._range_calls(batch)

    rows = [[(h * HOUR_MS, (h + 1) * HOUR_MS)] for h in range(FIRST, FIRST + HOURS)]
    found, total = await RangeReads(redis, keys, PARTITIONS, None, False).read(rows, scripts)
    assert steps == [1] * (HOURS // 2) + [PARTITIONS]  # rows, then the total: one script a partition
    assert found == [Totals(2 * PARTITIONS, 2 * PARTITIONS, 0)] * HOURS
    assert total.unique_users == 2 * PARTITIONS * HOURS


async def test_workers_starting_one_by_one_during_a_long_read_still_get_an_answer(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    partitions = 8
    keys = Keys(f"steps{time.monotonic_ns()}")
    await seed(redis, keys, 1, 2, partitions)
    for p in range(partitions):
        await redis.delete(keys.phases(1, p))  # no worker has started yet
    monkeypatch.setattr(range_read, "STEP_CELLS", partitions)  # a step reads one row
    reader = Reader(redis, keys, partitions)
    started: list[int] = []

    async def scripts(batch: list[tuple[list[str], list[str | int]]]) -> list[Any]:
        found = await reader._range_calls(batch)
        if len(started) < partitions:  # the next worker records its phases after every step
            await redis.set(keys.phases(1, len(started)), "0")
            started.append(len(started))
        return found

    rows = [[(h * HOUR_MS, (h + 1) * HOUR_MS)] for h in range(FIRST, FIRST + HOURS)]
    found, total = await RangeReads(redis, keys, partitions, None, False).read(rows, scripts)
    assert started == list(range(partitions))
    assert found == [Totals(2 * partitions, 2 * partitions, 0)] * HOURS
    assert total.unique_users == 2 * partitions * HOURS


async def test_a_total_too_wide_for_a_script_is_counted_by_a_pipeline(redis: Redis) -> None:
    """488 days by day in a zone without day rollups, in a generation without any (no phases recorded):
    the total's hours are more keys than one script takes, so the script answers only "no total" and
    the pipeline counts it (schemathesis found this read a 500)."""
    keys = Keys(f"steps{time.monotonic_ns()}")
    layout = CellLayout(keys)
    last = 500_000
    await redis.pfadd(layout.users(Cell(1, 0, hour_token(last - 30))), "wide-total")
    await redis.hset(layout.counts(Cell(1, 0, hour_token(last - 30))), "clicks", 1)
    query = {
        "from": [str((last - 487 * 24) * HOUR_MS)],
        "to": [str(last * HOUR_MS)],
        "tz": ["America/Hermosillo"],
        "granularity": ["day"],
    }
    rows = [[span] for span in parse_range(query, 8784).spans]
    reader = Reader(redis, keys, PARTITIONS)
    found, total = await RangeReads(redis, keys, PARTITIONS, None, False).read(rows, reader._range_calls)
    assert len(found) == len(rows) >= 488
    assert total == Totals(1, 1, 0)
