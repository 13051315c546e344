"""Redis adapter of the read side: one hour's totals in one round trip."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files

from redis.asyncio import Redis

from contract.keys import FIRST_GENERATION, Keys


@dataclass(frozen=True, slots=True)
class HourTotals:
    unique_users: int
    clicks: int
    impressions: int


class Reader:
    def __init__(self, redis: Redis, keys: Keys, partitions: int) -> None:
        self._keys = keys
        self._partitions = partitions
        self._read = redis.register_script(files("api").joinpath("read.lua").read_text())

    async def hour(self, hour: int) -> HourTotals:
        parts = range(self._partitions)
        args: list[str | int] = [FIRST_GENERATION, self._partitions]
        args += [self._keys.users_template(hour, p) for p in parts]
        args += [self._keys.counts_template(hour, p) for p in parts]
        users, clicks, impressions = await self._read(keys=[self._keys.generation], args=args)
        return HourTotals(int(users), int(clicks), int(impressions))
