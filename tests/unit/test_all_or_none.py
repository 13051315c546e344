"""A replay's partitions folded side by side: when one is refused, the others are cancelled and have
ended before the refusal reaches the code that drops the half-built generation."""

from __future__ import annotations

import asyncio

import pytest

from projector.replay.partition_fold import all_or_none
from projector.replay.reports import ReplayRefused


async def test_a_refused_fold_ends_the_others_before_its_refusal_is_raised() -> None:
    applied: list[str] = []
    ended = asyncio.Event()

    async def refused() -> int:
        await asyncio.sleep(0)
        raise ReplayRefused("unknown schema version 99")

    async def still_folding() -> int:
        try:
            for n in range(100):
                await asyncio.sleep(0.01)
                applied.append(f"apply {n}")
            return 1
        finally:
            ended.set()

    with pytest.raises(ReplayRefused, match="99"):
        await all_or_none([refused(), still_folding()])
    assert ended.is_set()  # with asyncio.gather it would still be applying here
    count = len(applied)
    await asyncio.sleep(0.05)
    assert len(applied) == count


async def test_every_result_in_order_when_none_fails() -> None:
    async def after(n: int) -> int:
        await asyncio.sleep(0.01 * (3 - n))
        return n

    assert await all_or_none([after(0), after(1), after(2)]) == [0, 1, 2]
