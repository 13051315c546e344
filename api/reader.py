"""Redis adapter of the read side: one hour's totals in one round trip, and ranges of them; hours that
left Redis (cold) are read through to the snapshot store."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from redis.asyncio import Redis

from api import hll
from api.cold import ColdSource, EntryGone
from contract.errors import Unavailable
from contract.hours import hour_token
from contract.keys import FIRST_GENERATION, Keys

SCRIPT_MAX_KEYS = 7000
"""Lua's unpack() stops near 8,000 values: ranges naming more HyperLogLogs than this use a pipeline."""


@dataclass(frozen=True, slots=True)
class HourTotals:
    unique_users: int
    clicks: int
    impressions: int


class Reader:
    def __init__(self, redis: Redis, keys: Keys, partitions: int, cold: ColdSource | None = None) -> None:
        self._redis = redis
        self._keys = keys
        self._partitions = partitions
        self.cold = cold
        """Where cold hours are read from; None until NATS is connected."""
        self._read = redis.register_script(files("api").joinpath("read.lua").read_text())
        self._range = redis.register_script(files("api").joinpath("range.lua").read_text())

    async def buckets(self, buckets: Sequence[Sequence[int]]) -> tuple[list[HourTotals], HourTotals]:
        """Each bucket's totals (a bucket is some hours) and the whole range's, uniques as unions."""
        keys = sum(len(hours) for hours in buckets) * self._partitions
        if keys <= SCRIPT_MAX_KEYS:
            return await self._buckets_by_script(buckets)
        return await self._buckets_by_pipeline(buckets)

    async def _buckets_by_script(
        self, buckets: Sequence[Sequence[int]]
    ) -> tuple[list[HourTotals], HourTotals]:
        parts = range(self._partitions)
        tokens = sorted({hour_token(h) for hours in buckets for h in hours})
        args: list[str | int] = [FIRST_GENERATION, self._partitions]
        args += [self._keys.cold_template(p) for p in parts]
        args += [len(tokens), *tokens, len(buckets)]
        for hours in buckets:
            args.append(len(hours) * self._partitions)
            args += [self._keys.users_template(h, p) for h in hours for p in parts]
            args += [self._keys.counts_template(h, p) for h in hours for p in parts]
        flat = [int(x) for x in await self._range(keys=[self._keys.generation], args=args)]
        if flat == [-1]:
            return await self._through(buckets)
        rows = [HourTotals(*flat[i : i + 3]) for i in range(0, len(flat) - 1, 3)]
        return rows, HourTotals(flat[-1], sum(r.clicks for r in rows), sum(r.impressions for r in rows))

    async def _buckets_by_pipeline(
        self, buckets: Sequence[Sequence[int]]
    ) -> tuple[list[HourTotals], HourTotals]:
        """Plain commands in one pipelined round trip: a long range names more keys than a script can
        unpack. The generation is read again at the end, and the read redone if a replay switched."""
        for _ in range(3):
            gen = self._keys.live_generation(await self._redis.get(self._keys.generation))
            if any(await self._cold_hours(gen, buckets)):
                return await self._through(buckets)
            async with self._redis.pipeline(transaction=False) as pipe:
                every: list[str] = []
                for hours in buckets:
                    users = [self._keys.users(gen, h, p) for h in hours for p in range(self._partitions)]
                    every += users
                    pipe.pfcount(*users)
                    for h in hours:
                        for p in range(self._partitions):
                            pipe.hmget(self._keys.counts(gen, h, p), "clicks", "impressions")
                pipe.pfcount(*every)
                pipe.get(self._keys.generation)
                replies = await pipe.execute()
            if self._keys.live_generation(replies[-1]) == gen:  # else a replay switched meanwhile: again
                return _totals(buckets, replies, self._partitions)
        raise Unavailable("Redis", "the generation kept switching during a range read")

    async def hour(self, hour: int) -> HourTotals:
        parts = range(self._partitions)
        args: list[str | int] = [FIRST_GENERATION, self._partitions, hour_token(hour)]
        args += [self._keys.users_template(hour, p) for p in parts]
        args += [self._keys.counts_template(hour, p) for p in parts]
        args += [self._keys.cold_template(p) for p in parts]
        found = await self._read(keys=[self._keys.generation], args=args)
        if int(found[0]) < 0:
            rows, _ = await self._through([[hour]])
            return rows[0]
        users, clicks, impressions = found
        return HourTotals(int(users), int(clicks), int(impressions))

    async def _cold_hours(self, gen: int, buckets: Sequence[Sequence[int]]) -> list[dict[str, int]]:
        """Per partition, which of the range's hours are cold: token -> snapshot entry watermark."""
        tokens = sorted({hour_token(h) for hours in buckets for h in hours})
        async with self._redis.pipeline(transaction=False) as pipe:
            for p in range(self._partitions):
                pipe.hmget(self._keys.cold(gen, p), tokens)
            replies = await pipe.execute()
        return [
            {t: int(at) for t, at in zip(tokens, found, strict=True) if at is not None} for found in replies
        ]

    async def _through(self, buckets: Sequence[Sequence[int]]) -> tuple[list[HourTotals], HourTotals]:
        """Some hours are cold: read the hot ones' HyperLogLogs and counters from Redis and the cold ones
        from the snapshot store, and count the unions here (api.hll gives what PFCOUNT gives)."""
        if self.cold is None:
            raise Unavailable("NATS", "cold hours are read from the snapshot store, which is not connected")
        parts = range(self._partitions)
        hours = sorted({h for bucket in buckets for h in bucket})
        for _ in range(3):
            gen = self._keys.live_generation(await self._redis.get(self._keys.generation))
            cold = await self._cold_hours(gen, buckets)
            async with self._redis.pipeline(transaction=False) as pipe:
                for h in hours:
                    for p in parts:
                        pipe.get(self._keys.users(gen, h, p))
                        pipe.hmget(self._keys.counts(gen, h, p), "clicks", "impressions")
                pipe.get(self._keys.generation)
                replies = await pipe.execute()
            if self._keys.live_generation(replies[-1]) != gen:
                continue  # a replay switched meanwhile: again
            cells: dict[tuple[int, int], tuple[bytes, int, int]] = {}
            fetches = []
            for i, h in enumerate(hours):
                token = hour_token(h)
                for p in parts:
                    at = cold[p].get(token)
                    if at is None:
                        raw, (c, m) = replies[
                            2 * (i * self._partitions + p) : 2 * (i * self._partitions + p) + 2
                        ]
                        cells[h, p] = (hll.registers(raw or b""), int(c or 0), int(m or 0))
                    else:
                        fetches.append(((h, p), self.cold.hour(p, token, at)))
            try:
                found = await asyncio.gather(*(f for _, f in fetches))
            except EntryGone:
                continue  # thawed and snapshotted again meanwhile: Redis names the new entry now
            for (cell, _), c in zip(fetches, found, strict=True):
                cells[cell] = (c.registers, c.clicks, c.impressions)
            rows: list[HourTotals] = []
            unions: list[bytes] = []
            for bucket in buckets:
                union = hll.merge(cells[h, p][0] for h in bucket for p in parts)
                unions.append(union)
                rows.append(
                    HourTotals(
                        hll.count(union),
                        sum(cells[h, p][1] for h in bucket for p in parts),
                        sum(cells[h, p][2] for h in bucket for p in parts),
                    )
                )
            total = HourTotals(
                hll.count(hll.merge(unions)), sum(r.clicks for r in rows), sum(r.impressions for r in rows)
            )
            return rows, total
        raise Unavailable("Redis", "the generation kept switching during a read")


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
