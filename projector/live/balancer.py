"""The live projector process: holds a fair share of the partitions' leases, one worker for each."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import redis.exceptions
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from contract import schema
from contract.hours import system_now_ms
from contract.keys import Keys
from contract.stream import snapshot_bucket
from deploy.projections_client import ProjectionsClient
from deploy.settings import Settings
from projector import metrics
from projector.fold.digest import Decoder
from projector.live.worker import TRANSIENT, PartitionWorker, Stopped, out_of_memory
from projector.log.compaction import AuditedThrough, compact, nothing_audited
from projector.projections.leases import Leases, fair_share
from projector.projections.snapshots import Snapshots, open_snapshots
from projector.projections.store import ProjectionStore

log = logging.getLogger("projector")


@dataclass
class _Running:
    worker: PartitionWorker
    stop: asyncio.Event
    task: asyncio.Task[Stopped]


class Projector:
    """Holds a fair share of the partitions' leases and runs a worker for each one it holds, and
    compacts the log now and then: `audited_through` asks the audit's records how far it got (without
    them, and with ANALYTICS_AUDIT_ENABLED, nothing is purged)."""

    def __init__(
        self,
        settings: Settings,
        nc: NATS,
        redis_client: ProjectionsClient,
        partitions: Iterable[int] | None = None,
        clock: Callable[[], int] = system_now_ms,
        decoder: Decoder = schema.decode,
        audited_through: AuditedThrough = nothing_audited,
    ) -> None:
        self.settings = settings
        self.decoder = decoder
        self.nc = nc
        self.store = ProjectionStore.from_settings(redis_client, settings)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.leases = Leases(redis_client, Keys(settings.key_prefix), self.owner, settings.lease_ttl_s)
        self.candidates = list(range(settings.partitions)) if partitions is None else list(partitions)
        self.clock = clock
        self.running: dict[int, _Running] = {}
        self.redis = redis_client
        self.snapshots: Snapshots | None = None
        self.audited_through = audited_through

    async def run(self, stop: asyncio.Event) -> None:
        log.info("projector %s may take partitions %s", self.owner, self.candidates)
        await self._drop_orphans()
        self.snapshots = await self._snapshot_store()
        try:
            next_compaction = time.monotonic() + self.settings.snapshot_interval_s
            while not stop.is_set():
                if self.snapshots is not None and time.monotonic() >= next_compaction:
                    next_compaction = time.monotonic() + self.settings.snapshot_interval_s
                    await self._compact()
                try:
                    await self._balance()
                except (*TRANSIENT, redis.exceptions.ResponseError) as exc:
                    if out_of_memory(exc):
                        metrics.REDIS_OOM.inc()
                    log.warning("lease upkeep failed (%s %s); retrying", type(exc).__name__, exc)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.lease_ttl_s / 3)
        finally:
            for running in self.running.values():
                running.stop.set()  # all at once: each may be waiting out a fetch
            await asyncio.gather(*(self._let_go(p, release=True) for p in list(self.running)))
            with contextlib.suppress(*TRANSIENT):
                await self.leases.leave()

    async def _compact(self) -> None:
        assert self.snapshots is not None
        try:
            covered = await self.snapshots.covered(self.settings.partitions)
            done = await compact(self.nc, self.settings, covered, self.clock(), self.audited_through)
        except (*TRANSIENT, NotFoundError, redis.exceptions.ResponseError) as exc:
            log.warning("compaction failed (%s %s); retrying later", type(exc).__name__, exc)
            return
        if done is not None:
            metrics.COMPACTED_SEQ.set(done.first_seq)

    async def _snapshot_store(self) -> Snapshots | None:
        if self.settings.snapshot_interval_s <= 0:
            return None
        try:
            found = await open_snapshots(self.nc, self.redis, self.settings)
        except TRANSIENT as exc:
            found, why = None, f"{type(exc).__name__} {exc}"
        else:
            why = "it does not exist"
        if found is None:
            bucket = snapshot_bucket(self.settings.stream_name)
            log.warning("no snapshots: bucket %s unavailable (%s); ./just stream creates it", bucket, why)
        return found

    async def _drop_orphans(self) -> None:
        """What a killed replay left behind goes at start, unless a replay is running now. Only
        generations handed out before the check are touched: a replay starting meanwhile gets a newer one."""
        try:
            upto = await self.store.last_generation_handed_out()
            if await self.store.lock_holder() is not None:
                return
            dropped = await self.store.drop_orphans(upto)
            if dropped:
                log.info("removed %d keys of generations a killed replay left behind", dropped)
        except (*TRANSIENT, redis.exceptions.ResponseError) as exc:
            log.warning("could not look for orphaned generations (%s); continuing", exc)

    async def _balance(self) -> None:
        for partition, running in list(self.running.items()):
            if running.task.done():
                await self._let_go(partition, release=False)
            elif not await self.leases.renew(partition):
                log.warning("p%d: lease lost; stopping", partition)
                await self._let_go(partition, release=False)
        live = await self.leases.heartbeat(self.clock())
        share = min(len(self.candidates), fair_share(self.settings.partitions, live, self.owner))
        for partition in sorted(self.running, reverse=True)[: max(0, len(self.running) - share)]:
            log.info("p%d: handing over (%d projectors share the partitions)", partition, len(live))
            await self._let_go(partition, release=True)
        if len(self.running) >= share:
            return
        start = hash(self.owner) % len(self.candidates)
        for partition in self.candidates[start:] + self.candidates[:start]:
            if partition in self.running:
                continue
            epoch = await self.leases.acquire(partition)
            if epoch is None:
                continue
            worker = PartitionWorker(
                self.settings,
                self.nc,
                self.store,
                partition,
                str(epoch),
                self.decoder,
                self.snapshots,
                self.clock,
            )
            stop = asyncio.Event()
            self.running[partition] = _Running(worker, stop, asyncio.create_task(worker.run(stop)))
            if len(self.running) >= share:
                return

    async def _let_go(self, partition: int, release: bool) -> None:
        running = self.running.pop(partition)
        running.stop.set()
        with contextlib.suppress(Exception):
            await running.task
        if release:
            with contextlib.suppress(*TRANSIENT):
                await self.leases.release(partition)


async def run_projector(
    settings: Settings,
    nc: NATS,
    redis_client: ProjectionsClient,
    stop: asyncio.Event,
    partitions: Iterable[int] | None = None,
    audited_through: AuditedThrough = nothing_audited,
) -> None:
    await Projector(settings, nc, redis_client, partitions, audited_through=audited_through).run(stop)
