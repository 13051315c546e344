"""What a stored cell (an hour, a quarter-hour, a day rollup) must hold, folded straight from the raw
events, and what Redis holds: registers and counts, compared exactly."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from redis.asyncio import Redis

from contract import cells as layout
from contract import hll
from contract.buckets import DAY_MS, QUARTER_MS, is_day_token, parse_day_token, parse_quarter_token
from contract.hours import HOUR_MS, parse_hour_token, partition_of
from contract.keys import Keys

Raw = tuple[int, str, str]
"""(timestamp ms, user, "click" | "impression")"""
Cell = tuple[bytes, int, int]
"""The 16384 registers, clicks, impressions."""


def span(token: str) -> tuple[int, int]:
    """[start, end) in epoch ms of the cell a token names."""
    if is_day_token(token):
        start = parse_day_token(token)
        return start, start + DAY_MS
    if len(token) == 12:
        hour, quarter = parse_quarter_token(token)
        start = hour * HOUR_MS + quarter * QUARTER_MS
        return start, start + QUARTER_MS
    start = parse_hour_token(token) * HOUR_MS
    return start, start + HOUR_MS


def expected(events: Iterable[Raw], token: str, partition: int, partitions: int) -> Cell:
    start, end = span(token)
    inside = [e for e in events if start <= e[0] < end and partition_of(e[1], partitions) == partition]
    clicks = sum(1 for e in inside if e[2] == "click")
    return hll.sketch(e[1] for e in inside), clicks, len(inside) - clicks


async def stored(redis: Redis, keys: Keys, gen: int, token: str, partition: int) -> Cell:
    raw = cast(
        bytes | None, await redis.get(layout.CellLayout(keys).users(layout.Cell(gen, partition, token)))
    )
    counts = await redis.hgetall(layout.CellLayout(keys).counts(layout.Cell(gen, partition, token)))
    return hll.registers(raw or b""), int(counts.get(b"clicks", 0)), int(counts.get(b"impressions", 0))
