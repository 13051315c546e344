"""What the HTTP app's handlers use, built once per app and complete: the connections (one Link), the
readiness checks, the POST and GET answers, the live hub and the error renderer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg

from api.get import Reads
from api.live import LiveHub
from api.tokens import ReadTokens
from contract.buckets import split_hours
from contract.schema import decode_changed
from deploy.settings import Settings
from ingest.post import Ingest
from server import metrics
from server.errors import Errors
from server.link import Clients, Link
from server.readiness import Readiness

LIVE_MIN_INTERVAL_S = 0.25
"""At most four pushes a second per live stream, however busy the current hour."""


@dataclass(frozen=True)
class Services:
    settings: Settings
    link: Link
    readiness: Readiness
    ingest: Ingest
    reads: Reads
    live: LiveHub
    errors: Errors

    @classmethod
    def build(cls, settings: Settings, clients: Clients | None, clock: Callable[[], int]) -> Services:
        link = Link(settings, clients)
        readiness = Readiness(settings, lambda: link.nc, lambda: link.redis, clock)
        ingest = Ingest(
            settings,
            clock,
            publisher=link.publisher,
            refused=lambda: readiness.refused,
            answered=metrics.counter("/analytics", "POST"),
        )
        reads = Reads(
            settings.read_staleness_s,
            hours=link.hour,
            buckets=link.buckets,
            max_buckets=settings.range_max_buckets,
            tokens=ReadTokens.from_settings(settings.read_tokens, settings.read_tokens_file),
            answered=metrics.counter("/analytics", "GET"),
            range_answered=metrics.counter("/analytics/range", "GET"),
            dimensions=frozenset(settings.dimension_names),
            pairs=frozenset(settings.dimension_pair_names),
            split=split_hours(settings.day_phases),
            axis_counts=link.axis_counts,
            axis_totals=link.axis_totals,
            axis_rows=link.axis_rows,
            breakdown_answered=metrics.counter("/analytics/breakdown", "GET"),
        )
        live = LiveHub(
            reads.latest_json,
            clock,
            settings.live_max_subscribers,
            settings.live_heartbeat_s,
            LIVE_MIN_INTERVAL_S,
        )
        return cls(settings, link, readiness, ingest, reads, live, Errors(settings.retry_after_s))

    def provide(self) -> Services:
        """The Litestar dependency handlers receive as `services`."""
        return self

    def lifespan(self, _app: Any) -> AbstractAsyncContextManager[None]:
        """The Litestar lifespan: connected while the app runs."""
        return self._running()

    @contextlib.asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        async with self.link.running(self.on_change):
            with contextlib.suppress(Exception):
                # a first answer before the first probe
                self.readiness.problems = await self.readiness.check()
            checking = asyncio.create_task(self.readiness.run())
            try:
                yield
            finally:
                self.live.close()  # open live streams end, so shutdown does not wait on them
                self.readiness.stopped = True
                checking.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await checking

    async def on_change(self, msg: Msg) -> None:
        """A projector's change notice: refresh the cached hours it names and wake live streams."""
        with contextlib.suppress(ValueError):
            hours = decode_changed(msg.data).hours
            self.reads.cache.changed(hours)
            self.live.changed(hours)
