"""Redis adapter for partition leases: one projector applies a partition at a time, fenced by epoch."""

from __future__ import annotations

import math

from contract.keys import Keys
from deploy.projections_client import ProjectionsClient
from projector.projections.scripts import source


class Leases:
    def __init__(self, redis: ProjectionsClient, keys: Keys, owner: str, ttl_s: float) -> None:
        self._redis = redis
        self._keys = keys
        self.owner = owner
        self._ttl_ms = int(ttl_s * 1000)
        self._script = redis.register_script(source("lease"))

    async def _call(self, op: str, partition: int) -> int:
        keys = [self._keys.lease(partition), self._keys.fence(partition)]
        return int(await self._script(keys=keys, args=[op, self.owner, self._ttl_ms]))

    async def acquire(self, partition: int) -> int | None:
        """The fencing epoch if the partition is now ours, None if another projector holds it."""
        epoch = await self._call("acquire", partition)
        return epoch or None

    async def seize(self, partition: int) -> int:
        """Take the partition even from a live holder; its next apply is fenced off."""
        return await self._call("seize", partition)

    async def renew(self, partition: int) -> bool:
        return bool(await self._call("renew", partition))

    async def release(self, partition: int) -> None:
        await self._call("release", partition)

    async def heartbeat(self, now_ms: int) -> list[str]:
        """Announce this projector; returns the live projectors, itself included, in a stable order."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self._keys.members, {self.owner: now_ms + self._ttl_ms})
            pipe.zremrangebyscore(self._keys.members, "-inf", now_ms)
            pipe.zrange(self._keys.members, 0, -1)
            _, _, live = await pipe.execute()
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in live)

    async def leave(self) -> None:
        await self._redis.zrem(self._keys.members, self.owner)


def fair_share(partitions: int, members: list[str], me: str) -> int:
    """How many partitions `me` should hold so that the shares differ by at most one and add up."""
    if me not in members:
        return math.ceil(partitions / max(1, len(members) + 1))
    base, extra = divmod(partitions, len(members))
    return base + (1 if members.index(me) < extra else 0)
