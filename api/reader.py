"""Redis adapter of the read side: one hour's totals in one round trip, and ranges of them; hours that
left Redis (cold) are read through to the snapshot store.

On one node a script reads every partition at once and counts there. On a Redis Cluster
(`split_by_partition`) a script may only touch one partition's slot: one call per partition in one
pipeline returns that partition's HyperLogLog bytes and counters (one atomic view of the partition),
and the unions are counted here with contract.hll, as for cold hours. Both give identical answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import redis.exceptions
from redis.commands.core import AsyncScript

from api.cold import ColdSource, EntryGone
from contract import hll
from contract.errors import Unavailable
from contract.hours import hour_token
from contract.keys import FIRST_GENERATION, Keys
from contract.projections_client import ProjectionsClient

SCRIPT_MAX_KEYS = 7000
"""Lua's unpack() stops near 8,000 values: ranges naming more HyperLogLogs than this use a pipeline."""


@dataclass(frozen=True, slots=True)
class HourTotals:
    unique_users: int
    clicks: int
    impressions: int


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
        self._partitions = partitions
        self._cold = cold
        """Where cold hours are read from (None: nowhere, a cold hour is then unavailable)."""
        self._split = split_by_partition
        self._read = redis.register_script(files("api").joinpath("read.lua").read_text())
        self._range = redis.register_script(files("api").joinpath("range.lua").read_text())

    async def buckets(self, buckets: Sequence[Sequence[int]]) -> tuple[list[HourTotals], HourTotals]:
        """Each bucket's totals (a bucket is some hours) and the whole range's, uniques as unions."""
        if self._split:
            return await self._buckets_split(buckets)
        keys = sum(len(hours) for hours in buckets) * self._partitions
        if keys <= SCRIPT_MAX_KEYS:
            return await self._buckets_by_script(buckets)
        return await self._buckets_by_pipeline(buckets)

    async def _buckets_by_script(
        self, buckets: Sequence[Sequence[int]]
    ) -> tuple[list[HourTotals], HourTotals]:
        parts = range(self._partitions)
        keys = [self._keys.generation(p) for p in parts]
        found = await self._range(keys=keys, args=self._range_args(buckets, parts, "count"))
        if int(found[0]) < 0:
            cells = [(h, p) for hours in buckets for h in hours for p in parts]
            return await self._count(buckets, _cells(cells, found))
        flat = [int(x) for x in found]
        rows = [HourTotals(*flat[i : i + 3]) for i in range(0, len(flat) - 1, 3)]
        return rows, HourTotals(flat[-1], sum(r.clicks for r in rows), sum(r.impressions for r in rows))

    def _range_args(
        self, buckets: Sequence[Sequence[int]], parts: Sequence[int], mode: str
    ) -> list[str | int]:
        args: list[str | int] = [FIRST_GENERATION, mode, len(parts)]
        args += [self._keys.cold_template(p) for p in parts]
        args.append(len(buckets))
        for hours in buckets:
            args.append(len(hours))
            for h in hours:
                args.append(hour_token(h))
                args += [self._keys.users_template(h, p) for p in parts]
                args += [self._keys.counts_template(h, p) for p in parts]
        return args

    async def _buckets_split(self, buckets: Sequence[Sequence[int]]) -> tuple[list[HourTotals], HourTotals]:
        """One range script per partition (its slot only), all in one pipeline; unions counted here."""
        calls = [
            ([self._keys.generation(p)], self._range_args(buckets, [p], "raw"))
            for p in range(self._partitions)
        ]
        found = await self._scripts(self._range, calls)
        cells: dict[tuple[int, int], Cell] = {}
        for p, raw in enumerate(found):
            cells.update(_cells([(h, p) for hours in buckets for h in hours], raw))
        return await self._count(buckets, cells)

    async def _hour_split(self, hour: int) -> HourTotals:
        calls = []
        for p in range(self._partitions):
            args: list[str | int] = [FIRST_GENERATION, "raw", 1, hour_token(hour)]
            args += [self._keys.users_template(hour, p), self._keys.counts_template(hour, p)]
            calls.append(([self._keys.generation(p)], [*args, self._keys.cold_template(p)]))
        found = await self._scripts(self._read, calls)
        cells: dict[tuple[int, int], Cell] = {}
        for p, raw in enumerate(found):
            cells.update(_cells([(hour, p)], raw))
        rows, _ = await self._count([[hour]], cells)
        return rows[0]

    async def _scripts(
        self, script: AsyncScript, calls: list[tuple[list[str], list[str | int]]]
    ) -> list[Any]:
        """Each call's script run in one pipelined round trip (EVALSHA; loaded first where missing)."""
        for attempt in range(2):
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for keys, args in calls:
                        pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
                    return list(await pipe.execute())
            except redis.exceptions.NoScriptError:
                if attempt:
                    raise
                await self._redis.script_load(script.script)
        raise AssertionError("unreachable")

    async def _gens(self) -> list[int]:
        """Every partition's live generation."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for p in range(self._partitions):
                pipe.get(self._keys.generation(p))
            return [self._keys.live_generation(raw) for raw in await pipe.execute()]

    def _same_gens(self, gens: list[int], replies: list[Any]) -> bool:
        """Whether the generation pointers read last in a pipeline are still `gens` (else a replay
        switched meanwhile)."""
        return [self._keys.live_generation(raw) for raw in replies[-self._partitions :]] == gens

    async def _buckets_by_pipeline(
        self, buckets: Sequence[Sequence[int]]
    ) -> tuple[list[HourTotals], HourTotals]:
        """Plain commands in one pipelined round trip: a long range names more keys than a script can
        unpack. The generation is read again at the end, and the read redone if a replay switched."""
        for _ in range(3):
            gens = await self._gens()
            if any(await self._cold_hours(gens, buckets)):
                return await self._through(buckets)
            async with self._redis.pipeline(transaction=False) as pipe:
                every: list[str] = []
                for hours in buckets:
                    users = [self._keys.users(gens[p], h, p) for h in hours for p in range(self._partitions)]
                    every += users
                    pipe.pfcount(*users)
                    for h in hours:
                        for p in range(self._partitions):
                            pipe.hmget(self._keys.counts(gens[p], h, p), "clicks", "impressions")
                pipe.pfcount(*every)
                for p in range(self._partitions):
                    pipe.get(self._keys.generation(p))
                replies = await pipe.execute()
            if self._same_gens(gens, replies):  # else a replay switched meanwhile: again
                return _totals(buckets, replies, self._partitions)
        raise Unavailable("Redis", "the generation kept switching during a range read")

    async def hour(self, hour: int) -> HourTotals:
        if self._split:
            return await self._hour_split(hour)
        parts = range(self._partitions)
        args: list[str | int] = [FIRST_GENERATION, "count", self._partitions, hour_token(hour)]
        args += [self._keys.users_template(hour, p) for p in parts]
        args += [self._keys.counts_template(hour, p) for p in parts]
        args += [self._keys.cold_template(p) for p in parts]
        found = await self._read(keys=[self._keys.generation(p) for p in parts], args=args)
        if int(found[0]) < 0:
            rows, _ = await self._count([[hour]], _cells([(hour, p) for p in parts], found))
            return rows[0]
        users, clicks, impressions = found
        return HourTotals(int(users), int(clicks), int(impressions))

    async def _cold_hours(self, gens: list[int], buckets: Sequence[Sequence[int]]) -> list[dict[str, int]]:
        """Per partition, which of the range's hours are cold: token -> snapshot entry watermark."""
        tokens = sorted({hour_token(h) for hours in buckets for h in hours})
        async with self._redis.pipeline(transaction=False) as pipe:
            for p in range(self._partitions):
                pipe.hmget(self._keys.cold(gens[p], p), tokens)
            replies = await pipe.execute()
        return [
            {t: int(at) for t, at in zip(tokens, found, strict=True) if at is not None} for found in replies
        ]

    async def _through(
        self, buckets: Sequence[Sequence[int]], attempt: int = 0
    ) -> tuple[list[HourTotals], HourTotals]:
        """The pipelined read of a range with cold hours: each hour's HyperLogLog bytes and counters
        from Redis, or the snapshot entry that holds it cold."""
        parts = range(self._partitions)
        hours = sorted({h for bucket in buckets for h in bucket})
        for _ in range(3):
            gens = await self._gens()
            cold = await self._cold_hours(gens, buckets)
            async with self._redis.pipeline(transaction=False) as pipe:
                for h in hours:
                    for p in parts:
                        pipe.get(self._keys.users(gens[p], h, p))
                        pipe.hmget(self._keys.counts(gens[p], h, p), "clicks", "impressions")
                for p in parts:
                    pipe.get(self._keys.generation(p))
                replies = await pipe.execute()
            if not self._same_gens(gens, replies):
                continue  # a replay switched meanwhile: again
            cells: dict[tuple[int, int], Cell] = {}
            for i, (h, p) in enumerate((h, p) for h in hours for p in parts):
                raw, (clicks, impressions) = replies[2 * i], replies[2 * i + 1]
                at = cold[p].get(hour_token(h))
                cells[h, p] = Cell(at, raw or b"", int(clicks or 0), int(impressions or 0))
            return await self._count(buckets, cells, attempt)
        raise Unavailable("Redis", "the generation kept switching during a read")

    async def _count(
        self, buckets: Sequence[Sequence[int]], cells: dict[tuple[int, int], Cell], attempt: int = 0
    ) -> tuple[list[HourTotals], HourTotals]:
        """Totals of buckets some of whose hours are cold: the cold parts come from the snapshot store,
        and the unions are counted here (contract.hll gives what PFCOUNT gives)."""
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
            return await self._through(buckets, attempt + 1)
        sketches: dict[tuple[int, int], tuple[bytes, int, int]] = {}
        for (cell, _), hour in zip(cold, found, strict=True):
            sketches[cell] = (hour.registers, hour.clicks, hour.impressions)
        for cell, c in cells.items():
            if c.at is None:
                sketches[cell] = (hll.registers(c.raw), c.clicks, c.impressions)
        parts = range(self._partitions)
        rows: list[HourTotals] = []
        unions: list[bytes] = []
        for bucket in buckets:
            union = hll.merge(sketches[h, p][0] for h in bucket for p in parts)
            unions.append(union)
            clicks = sum(sketches[h, p][1] for h in bucket for p in parts)
            impressions = sum(sketches[h, p][2] for h in bucket for p in parts)
            rows.append(HourTotals(hll.count(union), clicks, impressions))
        total = hll.count(hll.merge(unions))
        return rows, HourTotals(total, sum(r.clicks for r in rows), sum(r.impressions for r in rows))


@dataclass(frozen=True, slots=True)
class Cell:
    """One hour of one partition as a read found it: cold (the snapshot entry's watermark), or its
    HyperLogLog's bytes (b"": none) and counters."""

    at: int | None
    raw: bytes
    clicks: int
    impressions: int


def _cells(order: Sequence[tuple[int, int]], found: list[Any]) -> dict[tuple[int, int], Cell]:
    """The cells of a script's cold answer: -1, then per cell {entry watermark or '', bytes or '',
    clicks, impressions} in `order`."""
    cells = {}
    for i, cell in enumerate(order):
        at, raw, clicks, impressions = found[1 + 4 * i : 5 + 4 * i]
        cells[cell] = Cell(int(at) if at else None, raw or b"", int(clicks), int(impressions))
    return cells


def _totals(
    buckets: Sequence[Sequence[int]], replies: list[Any], partitions: int
) -> tuple[list[HourTotals], HourTotals]:
    rows: list[HourTotals] = []
    i = 0
    for hours in buckets:
        users = int(replies[i])
        i += 1
        clicks = impressions = 0
        for _ in range(len(hours) * partitions):
            c, m = replies[i]
            clicks += int(c or 0)
            impressions += int(m or 0)
            i += 1
        rows.append(HourTotals(users, clicks, impressions))
    total = HourTotals(int(replies[i]), sum(r.clicks for r in rows), sum(r.impressions for r in rows))
    return rows, total
