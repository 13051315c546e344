"""Redis adapter of the read side: one hour's totals in one round trip, and ranges of any rows
(api.range_read); hours that left Redis (cold) are read through to the snapshot store.

On one node a script reads every partition at once and counts there. On a Redis Cluster
(`split_by_partition`) a script may only touch one partition's slot: one call per partition in one
pipeline returns that partition's HyperLogLog bytes and counters (one atomic view of the partition),
and the unions are counted here with contract.hll, as for cold hours. Both give identical answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

import redis.exceptions
from redis.commands.core import AsyncScript

from api.cells import joined
from api.cold import ColdSource, EntryGone
from api.range_read import SCRIPT_MAX_KEYS, Found, RangeReads, Totals
from contract import hll
from contract.cells import CellLayout
from contract.hours import HOUR_MS, hour_token
from contract.keys import FIRST_GENERATION, GEN_PLACEHOLDER, Keys
from deploy.projections_client import ProjectionsClient
from server.failures import Unavailable

__all__ = ["SCRIPT_MAX_KEYS", "HourTotals", "Reader"]

HourTotals = Totals


class Reader:
    def __init__(
        self,
        redis: ProjectionsClient,
        keys: Keys,
        partitions: int,
        cold: ColdSource | None = None,
        *,
        split_by_partition: bool = False,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._cells = CellLayout(keys)
        self._partitions = partitions
        self._cold = cold
        """Where cold hours are read from (None: nowhere, a cold hour is then unavailable)."""
        self._split = split_by_partition
        self._read = redis.register_script(files("api").joinpath("read.lua").read_text())
        self._range = redis.register_script(files("api").joinpath("range.lua").read_text())
        self._ranges = RangeReads(redis, keys, partitions, cold, split_by_partition)

    async def buckets(self, buckets: Sequence[Sequence[int]]) -> tuple[list[HourTotals], HourTotals]:
        """Each bucket's totals (a bucket is some UTC hours) and all buckets', uniques as unions."""
        rows = [joined([[(h * HOUR_MS, (h + 1) * HOUR_MS) for h in hours]]) for hours in buckets]
        return await self._ranges.read(rows, self._range_calls)

    async def spans(self, spans: Sequence[tuple[int, int]]) -> tuple[list[HourTotals], HourTotals]:
        """Each span's totals (a span is [start, end) on quarter-hours, as local hours and days are) and
        the whole range's, uniques as unions of exactly the cells inside."""
        return await self._ranges.read([[span] for span in spans], self._range_calls)

    async def _range_calls(self, calls: list[tuple[list[str], list[str | int]]]) -> list[Any]:
        if self._split:
            return await self._scripts(self._range, calls)
        ((keys, args),) = calls
        return [await self._range(keys=keys, args=args)]

    async def _hour_split(self, hour: int, attempt: int) -> HourTotals:
        calls = []
        for p in range(self._partitions):
            args: list[str | int] = [FIRST_GENERATION, "raw", 1, hour_token(hour)]
            args += self._cells.template(p, hour_token(hour))
            calls.append(([self._keys.generation(p)], [*args, self._keys.cold(GEN_PLACEHOLDER, p)]))
        found = await self._scripts(self._read, calls)
        cells: dict[tuple[int, int], Found] = {}
        for p, raw in enumerate(found):
            cells.update(_cells([(hour, p)], raw))
        return await self._count(hour, cells, attempt)

    async def _scripts(
        self, script: AsyncScript, calls: list[tuple[list[str], list[str | int]]]
    ) -> list[Any]:
        """Each call's script run in one pipelined round trip (EVALSHA; loaded first where missing)."""
        for attempt in range(2):
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for keys, args in calls:
                        # A cluster pipeline refuses pipe.evalsha but routes a raw EVALSHA by its keys
                        pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
                    return list(await pipe.execute())
            except redis.exceptions.NoScriptError:
                if attempt:
                    raise
                await self._redis.script_load(script.script)
            except RuntimeError as exc:
                # redis-py's cluster pipeline passes on uvloop's RuntimeError for a connection the node
                # closed under it (seen while a slot moved) instead of a ConnectionError: the same
                # fault, and a 503 like it, not a 500.
                if "closed" not in str(exc):
                    raise
                raise redis.exceptions.ConnectionError(str(exc)) from exc
        raise AssertionError("unreachable")

    async def hour(self, hour: int) -> HourTotals:
        return await self._hour(hour, 0)

    async def _hour(self, hour: int, attempt: int) -> HourTotals:
        if self._split:
            return await self._hour_split(hour, attempt)
        parts = range(self._partitions)
        args: list[str | int] = [FIRST_GENERATION, "count", self._partitions, hour_token(hour)]
        users, counts = zip(*(self._cells.template(p, hour_token(hour)) for p in parts), strict=True)
        args += [*users, *counts]
        args += [self._keys.cold(GEN_PLACEHOLDER, p) for p in parts]
        found = await self._read(keys=[self._keys.generation(p) for p in parts], args=args)
        if int(found[0]) < 0:
            return await self._count(hour, _cells([(hour, p) for p in parts], found), attempt)
        users, clicks, impressions = found
        return HourTotals(int(users), int(clicks), int(impressions))

    async def _count(self, hour: int, cells: dict[tuple[int, int], Found], attempt: int) -> HourTotals:
        """The totals of an hour cold in some partitions: the cold parts come from the snapshot store,
        and the union is counted here (contract.hll gives what PFCOUNT gives)."""
        cold = [(cell, c) for cell, c in cells.items() if c.at is not None]
        if cold and self._cold is None:
            raise Unavailable("NATS", "cold hours are read from the snapshot store, which is not connected")
        try:
            source = self._cold
            found = await asyncio.gather(
                *(source.hour(p, hour_token(h), c.at or 0) for (h, p), c in cold if source is not None)
            )
        except EntryGone as gone:
            # Thawed and snapshotted again since Redis named the entry: Redis names the new one now.
            if attempt >= 3:
                raise Unavailable("NATS", f"snapshot entry {gone} is missing") from None
            return await self._hour(hour, attempt + 1)
        sketches = [(h.registers, h.clicks, h.impressions) for h in found]
        sketches += [(hll.registers(c.raw), c.clicks, c.impressions) for c in cells.values() if c.at is None]
        return HourTotals(
            hll.count(hll.merge(s[0] for s in sketches)),
            sum(s[1] for s in sketches),
            sum(s[2] for s in sketches),
        )


def _cells(order: Sequence[tuple[int, int]], found: list[Any]) -> dict[tuple[int, int], Found]:
    """The cells of a script's cold answer: -1, then per cell {entry watermark or '', bytes or '',
    clicks, impressions} in `order`."""
    cells = {}
    for i, cell in enumerate(order):
        at, raw, clicks, impressions = found[1 + 4 * i : 5 + 4 * i]
        cells[cell] = Found(int(at) if at else None, raw or b"", int(clicks), int(impressions))
    return cells
