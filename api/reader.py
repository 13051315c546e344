"""Redis adapter of the read side: one hour's totals in one round trip."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from redis.asyncio import Redis

from contract.errors import Unavailable
from contract.keys import FIRST_GENERATION, Keys

SCRIPT_MAX_KEYS = 7000
"""Lua's unpack() stops near 8,000 values: ranges naming more HyperLogLogs than this use a pipeline."""


@dataclass(frozen=True, slots=True)
class HourTotals:
    unique_users: int
    clicks: int
    impressions: int


class Reader:
    def __init__(self, redis: Redis, keys: Keys, partitions: int) -> None:
        self._redis = redis
        self._keys = keys
        self._partitions = partitions
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
        args: list[str | int] = [FIRST_GENERATION, len(buckets)]
        for hours in buckets:
            args.append(len(hours) * self._partitions)
            args += [self._keys.users_template(h, p) for h in hours for p in parts]
            args += [self._keys.counts_template(h, p) for h in hours for p in parts]
        flat = [int(x) for x in await self._range(keys=[self._keys.generation], args=args)]
        rows = [HourTotals(*flat[i : i + 3]) for i in range(0, len(flat) - 1, 3)]
        return rows, HourTotals(flat[-1], sum(r.clicks for r in rows), sum(r.impressions for r in rows))

    async def _buckets_by_pipeline(
        self, buckets: Sequence[Sequence[int]]
    ) -> tuple[list[HourTotals], HourTotals]:
        """Plain commands in one pipelined round trip: a long range names more keys than a script can
        unpack. The generation is read again at the end, and the read redone if a replay switched."""
        for _ in range(3):
            gen = self._keys.live_generation(await self._redis.get(self._keys.generation))
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
        args: list[str | int] = [FIRST_GENERATION, self._partitions]
        args += [self._keys.users_template(hour, p) for p in parts]
        args += [self._keys.counts_template(hour, p) for p in parts]
        users, clicks, impressions = await self._read(keys=[self._keys.generation], args=args)
        return HourTotals(int(users), int(clicks), int(impressions))


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
