"""The locks a replay holds: one replay at a time (a lock in Redis), and every partition's lease seized
so that live projectors pause while the switch is made."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from projector.projections.leases import Leases
from projector.projections.store import ProjectionStore
from projector.replay.reports import ReplayRefused


@contextlib.asynccontextmanager
async def replay_lock(store: ProjectionStore, owner: str, ttl_s: float) -> AsyncIterator[None]:
    if not await store.lock(owner, ttl_s):
        raise ReplayRefused(
            f"another replay is running ({await store.lock_holder()}); try again when it ends"
        )
    keeper = asyncio.create_task(_renew(lambda: store.renew_lock(owner, ttl_s), ttl_s / 3))
    try:
        yield
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        await store.unlock(owner)


@contextlib.asynccontextmanager
async def seized(leases: Leases, partitions: range, ttl_s: float) -> AsyncIterator[dict[int, str]]:
    """Every partition's lease, taken from whoever holds it: their next apply is fenced off."""
    epochs = {p: str(await leases.seize(p)) for p in partitions}

    async def renew_all() -> None:
        for p in partitions:
            await leases.renew(p)

    keeper = asyncio.create_task(_renew(renew_all, ttl_s / 3))
    try:
        yield epochs
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        for p in partitions:
            await leases.release(p)


async def _renew(renew: Callable[[], Awaitable[object]], every: float) -> None:
    while True:
        await asyncio.sleep(every)
        await renew()
