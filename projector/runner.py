"""The live projector: one worker per partition, fetching batches, folding, applying, acking."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

import nats.errors
import redis.exceptions
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError
from redis.asyncio import Redis

from contract.keys import Keys
from contract.settings import Settings
from contract.stream import consumer_name
from projector.consumer import decode, position_consumer
from projector.fold import fold
from projector.store import Outcome, ProjectionStore

log = logging.getLogger("projector")

TRANSIENT = (
    OSError,
    asyncio.TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    nats.errors.Error,
)


class PartitionWorker:
    """Applies one partition. Its position lives in Redis, so it can always start over from there."""

    def __init__(self, settings: Settings, nc: NATS, store: ProjectionStore, partition: int) -> None:
        self.settings = settings
        self.nc = nc
        self.js = nc.jetstream()
        self.store = store
        self.partition = partition
        self.gen = 0
        self.watermark = 0
        self.applied_events = 0

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.2
        while not stop.is_set():
            try:
                await self._follow(stop)
                backoff = 0.2
            except NotFoundError:
                log.warning("p%d: stream %s not found yet", self.partition, self.settings.stream_name)
            except TRANSIENT as exc:
                log.warning("p%d: %s: %s; retrying", self.partition, type(exc).__name__, exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, 5.0)

    async def _follow(self, stop: asyncio.Event) -> None:
        """Position from Redis, then apply batches until stopped or until Redis disagrees."""
        self.gen = await self.store.current_generation()
        self.watermark = await self.store.watermark(self.gen, self.partition)
        await position_consumer(
            self.js, self.settings, self.partition, self.watermark, self.settings.projector_batch
        )
        log.info(
            "p%d: following from stream seq %d (generation %d)",
            self.partition,
            self.watermark + 1,
            self.gen,
        )
        sub = await self.js.pull_subscribe_bind(
            durable=consumer_name(self.partition), stream=self.settings.stream_name
        )
        try:
            while not stop.is_set():
                try:
                    msgs = await sub.fetch(
                        self.settings.projector_batch, timeout=self.settings.projector_idle_s
                    )
                except nats.errors.TimeoutError:
                    if not await self._position_still_true():
                        return
                    continue
                deltas = fold((decode(m) for m in msgs), after=self.watermark)
                if deltas:
                    result = await self.store.apply(self.gen, self.partition, self.watermark, deltas)
                    if result.outcome is not Outcome.APPLIED:
                        log.warning(
                            "p%d: apply refused (%s; redis watermark %d, ours %d); resyncing",
                            self.partition,
                            result.outcome.name,
                            result.watermark,
                            self.watermark,
                        )
                        return
                    self.watermark = result.watermark
                    self.applied_events += deltas.events
                for msg in msgs:
                    await msg.ack()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _position_still_true(self) -> bool:
        """Idle check: Redis may have been wiped, restored or switched to a new generation."""
        gen = await self.store.live_generation()
        if gen != self.gen:
            log.warning("p%d: generation is now %s (was %d); resyncing", self.partition, gen, self.gen)
            return False
        watermark = await self.store.watermark(self.gen, self.partition)
        if watermark != self.watermark:
            log.warning(
                "p%d: redis watermark is %d, expected %d; resyncing",
                self.partition,
                watermark,
                self.watermark,
            )
            return False
        return True


async def run_projector(
    settings: Settings,
    nc: NATS,
    redis_client: Redis,
    stop: asyncio.Event,
    partitions: Iterable[int] | None = None,
) -> None:
    store = ProjectionStore(redis_client, Keys(settings.key_prefix))
    parts = list(range(settings.partitions)) if partitions is None else list(partitions)
    workers = [PartitionWorker(settings, nc, store, p) for p in parts]
    await asyncio.gather(*(w.run(stop) for w in workers))
