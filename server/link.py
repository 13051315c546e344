"""The HTTP app's connections to NATS and Redis, as one object: made complete, connected while the app
runs (NATS in the background, retried until it answers), drained and closed when it stops.

Until a connection is up, what needs it raises Unavailable (a prompt 503), so nothing is ever attached to
the app after it is built."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from api.cold import ColdHour, ColdStore
from api.reader import HourTotals, Reader
from contract.hours import changes_subject
from contract.keys import Keys
from deploy.backoff import with_backoff
from deploy.projections_client import ProjectionsClient, connect
from deploy.settings import Settings
from ingest.publisher import Publisher
from ingest.seams import EventLog
from server import metrics
from server.failures import Unavailable

log = logging.getLogger("server")

DRAIN_TIMEOUT_S = 5.0
"""A shutdown never waits longer than this for NATS to take what is still buffered."""

OnChange = Callable[[Msg], Awaitable[None]]


@dataclass
class Clients:
    """Connections the app uses. Passed in (tests) they stay the caller's; otherwise the link's own.

    `log` and `hours` replace the NATS append and the Redis read with stand-ins (unit tests), as an
    httpx transport replaces the network."""

    nc: NATS | None = None
    redis: ProjectionsClient | None = None
    reads: NATS | None = None
    """The reading connection (`api` role) when it is not `nc`."""
    log: EventLog | None = None
    hours: Callable[[int], Awaitable[HourTotals]] | None = None


class _SnapshotStore:
    """Cold hours (a ColdSource): the snapshot store once the reading connection is up."""

    def __init__(self) -> None:
        self.store: ColdStore | None = None

    async def hour(self, partition: int, token: str, at: int) -> ColdHour:
        if self.store is None:
            raise Unavailable("NATS", "cold hours are read from the snapshot store, which is not connected")
        return await self.store.hour(partition, token, at)


class Link:
    def __init__(self, settings: Settings, clients: Clients | None = None) -> None:
        self._settings = settings
        self._given = clients if clients is not None else Clients()
        self._owned = clients is None
        self._separate_reads = bool(settings.nats_api_url) and settings.nats_api_url != settings.nats_url
        self._cold = _SnapshotStore()
        self._nc: NATS | None = None
        self._reads: NATS | None = None
        self._redis: ProjectionsClient | None = None
        self._reader: Reader | None = None
        self._publisher: Publisher | None = None

    @property
    def nc(self) -> NATS | None:
        """The writing connection, once up (for readiness)."""
        return self._nc

    @property
    def redis(self) -> ProjectionsClient | None:
        return self._redis

    def publisher(self) -> Publisher:
        if self._publisher is None:
            raise Unavailable("NATS", "not connected yet")
        return self._publisher

    async def hour(self, hour: int) -> HourTotals:
        if self._given.hours is not None:
            return await self._given.hours(hour)
        return await self._redis_reader().hour(hour)

    async def buckets(self, spans: Sequence[tuple[int, int]]) -> tuple[list[HourTotals], HourTotals]:
        """A range's rows, each [start, end) in ms (api.range_read)."""
        return await self._redis_reader().spans(spans)

    async def axis_counts(self, hours: Sequence[str], prefix: str) -> dict[str, tuple[int, int]]:
        return await self._redis_reader().axis_counts(hours, prefix)

    async def axis_totals(self, hours: Sequence[str], axes: Sequence[str]) -> list[HourTotals]:
        return await self._redis_reader().axis_totals(hours, axes)

    async def axis_rows(self, buckets: Sequence[Sequence[str]], axis: str) -> list[HourTotals]:
        return await self._redis_reader().axis_rows(buckets, axis)

    def _redis_reader(self) -> Reader:
        if self._reader is None:
            raise Unavailable("Redis", "not connected yet")
        return self._reader

    @contextlib.asynccontextmanager
    async def running(self, on_change: OnChange) -> AsyncIterator[None]:
        """Connected (or connecting) inside the block; `on_change` gets the projectors' change notices."""
        settings, given = self._settings, self._given
        if given.hours is None:
            self._redis = given.redis if given.redis is not None else redis_client(settings)
            self._reader = Reader(
                self._redis,
                Keys(settings.key_prefix),
                settings.partitions,
                self._cold,
                split_by_partition=settings.redis_cluster,
            )
        connecting: list[asyncio.Task[None]] = []
        if given.log is not None:
            self._publisher = Publisher(given.log, settings)
        elif given.nc is None:
            options = settings.nats_options("hourglass-http")
            connecting.append(asyncio.create_task(self._connect(options, self._writes, on_change)))
            if self._separate_reads:
                options = settings.nats_read_options("hourglass-http-reads")
                connecting.append(asyncio.create_task(self._connect(options, self._reads_on, on_change)))
        else:
            await self._writes(given.nc, on_change)
            if self._separate_reads:
                await self._reads_on(given.reads or given.nc, on_change)
        try:
            yield
        finally:
            for task in connecting:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._close()

    async def _writes(self, nc: NATS, on_change: OnChange) -> None:
        self._nc = nc
        self._publisher = Publisher.over_nats(nc, self._settings, on_batch=metrics.on_batch)
        if not self._separate_reads:
            await self._reads_on(nc, on_change)

    async def _reads_on(self, nc: NATS, on_change: OnChange) -> None:
        """Change notices and cold hours: under the `api` role, on a connection of their own."""
        self._reads = nc
        await nc.subscribe(changes_subject(self._settings.stream_name), cb=on_change)
        self._cold.store = ColdStore(nc, self._settings.stream_name, self._settings.publish_timeout_s)

    async def _connect(
        self,
        options: dict[str, Any],
        use: Callable[[NATS, OnChange], Awaitable[None]],
        on_change: OnChange,
    ) -> None:
        """nats-py does not retry a failed first connect, so the app starts anyway and keeps trying."""
        nc = await with_backoff(
            lambda: nats.connect(**options), (TimeoutError, nats.errors.Error, OSError), "NATS", log
        )
        await use(nc, on_change)

    async def _close(self) -> None:
        if self._publisher is not None:
            await self._publisher.close()  # answer every request still waiting for a PubAck
        if self._owned:
            for nc in {self._nc, self._reads} - {None}:
                assert nc is not None
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(nc.drain(), DRAIN_TIMEOUT_S)
        if self._redis is not None and self._redis is not self._given.redis:
            await self._redis.aclose()


def redis_client(settings: Settings) -> ProjectionsClient:
    return connect(settings)
