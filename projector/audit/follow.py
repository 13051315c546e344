"""The continuous audit: audits each hour once it has been closed for ANALYTICS_AUDIT_GRACE_S, at most
ANALYTICS_AUDIT_CPU_SHARE of one core, recording results in Redis and as metrics, and a WARNING per
mismatch; then the day rollups holding the hours it audited, against their components. Several processes
share the work: each hour is claimed (SET NX PX) by the one that audits it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import nats.errors
import redis.exceptions
from nats.aio.client import Client as NATS
from nats.js.errors import KeyNotFoundError
from prometheus_client import Counter, Gauge

from contract.hours import hour_of, hour_token, system_now_ms
from contract.keys import Keys
from deploy.projections_client import ProjectionsClient
from deploy.settings import Settings
from projector import metrics
from projector.audit.auditor import Auditor, messages_per_hour
from projector.audit.records import Records
from projector.audit.served import Moved
from projector.audit.verdict import HourAudit, Verdict
from projector.reach import keep_reaching_nats, keep_reaching_redis

log = logging.getLogger("audit")
T = TypeVar("T")

HOURS = Counter("hourglass_audit_hours", "Hours audited, by verdict", ["verdict"])
MISMATCHES = Counter("hourglass_audit_mismatches", "Hours whose served value differs from the log's")
DAYS = Counter(
    "hourglass_audit_days", "Day rollups audited against their components, by verdict", ["verdict"]
)
LAST_HOUR = Gauge("hourglass_audit_last_hour", "The last hour audited, in hours since the epoch")
CLAIM_MS = 300_000
"""How long a claim on an hour holds: far longer than an hour's audit takes."""

TRANSIENT = (
    nats.errors.Error,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    TimeoutError,
    Moved,  # replays kept switching generations
    KeyNotFoundError,  # a cold hour's entry was replaced (thawed, snapshotted again) meanwhile
)
"""A pass that meets these is tried again at the next interval."""


async def follow(settings: Settings, stop: asyncio.Event) -> int:
    """The audit process: reaches its servers (waiting for them), then audits until stopped."""
    metrics.serve(settings.audit_metrics_port)
    nc = await _unless_stopped(
        keep_reaching_nats(settings, "hourglass-audit", settings.connect_deadline_s), stop
    )
    if nc is None:
        return 0
    try:
        redis_client = await _unless_stopped(keep_reaching_redis(settings, settings.connect_deadline_s), stop)
        if redis_client is None:
            return 0
        try:
            await Follower(settings, nc, redis_client).run(stop)
        finally:
            await redis_client.aclose()
    finally:
        await nc.close()
    return 0


async def _unless_stopped(reaching: Coroutine[Any, Any, T], stop: asyncio.Event) -> T | None:
    """What `reaching` returns, or None on a stop signal first: the signal leaves stopping to this
    process, which may still be waiting for its servers."""
    reached = asyncio.ensure_future(reaching)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({reached, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not reached.done():
            reached.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reached
    return reached.result() if not reached.cancelled() else None


class Follower:
    def __init__(
        self,
        settings: Settings,
        nc: NATS,
        redis_client: ProjectionsClient,
        clock: Callable[[], int] = system_now_ms,
    ) -> None:
        self.settings, self.nc, self.redis, self.clock = settings, nc, redis_client, clock
        self.records = Records(redis_client, Keys(settings.key_prefix))
        self.auditor = Auditor(settings, nc, redis_client)
        self.owner = f"audit-{uuid.uuid4().hex[:8]}"

    async def run(self, stop: asyncio.Event) -> None:
        log.info("auditing hours closed for %.0fs, at most %.0f%% of a core", *self._limits())
        while not stop.is_set():
            try:
                await self.pass_once(stop)
            except TRANSIENT as exc:
                log.warning("audit pass failed (%s %s); retrying", type(exc).__name__, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.audit_interval_s)

    def _limits(self) -> tuple[float, float]:
        return self.settings.audit_grace_s, self.settings.audit_cpu_share * 100

    def due_before(self) -> int:
        """Hours before this one have been closed for the grace period."""
        return hour_of(self.clock() - int(self.settings.audit_grace_s * 1000))

    async def pass_once(self, stop: asyncio.Event | None = None) -> list[HourAudit]:
        """Audits every due hour not audited yet, or with late events since (and not claimed by
        another process), then raises `audited through` to just before the first hour still due."""
        before = self.due_before()
        counts = {h: n for h, n in (await messages_per_hour(self.nc, self.settings)).items() if h < before}
        done: list[HourAudit] = []
        for hour in await self.records.unaudited(counts):
            if stop is not None and stop.is_set():
                return done
            if not await self.records.claim(hour, self.owner, CLAIM_MS):
                continue
            try:
                # Another process may have audited it since this pass listed it, and released its claim.
                if await self.records.unaudited({hour: counts[hour]}):
                    done.append(await self._audit(hour, counts[hour]))
            finally:
                await self.records.release(hour, self.owner)
        await self._audit_days([a.hour for a in done])
        left = await self.records.unaudited(counts)
        through = (left[0] if left else before) - 1
        current = await self.records.through()
        if current is None or through > current:
            await self.records.raise_through(through)
        return done

    async def _audit_days(self, hours: list[int]) -> None:
        """The day rollups holding the hours just audited, each against its components."""
        for token in await self.auditor.days(hours) if hours else []:
            found = await self.auditor.day(token)
            before = await self.records.save_day(found, self.clock())
            DAYS.labels(found.verdict.value).inc()
            # A day holds many hours, so it is checked again and again: warned about once, when found.
            if found.verdict is Verdict.MISMATCH and before != Verdict.MISMATCH.value:
                log.warning("audit: day rollup %s differs from its components: %s", token, found.line())

    async def _audit(self, hour: int, messages: int) -> HourAudit:
        cpu, wall = time.process_time(), time.monotonic()
        found = await self.auditor.hour(hour)
        await self.records.save(found, self.clock(), messages)
        HOURS.labels(found.verdict.value).inc()
        LAST_HOUR.set(hour)
        if found.verdict is Verdict.MISMATCH:
            MISMATCHES.inc()
            log.warning("audit: hour %s differs from its log: %s", hour_token(hour), found.line())
        else:
            log.info("audit: %s", found.line())
        # The CPU share: after spending c seconds of CPU, rest c * (1 / share - 1).
        spent = time.process_time() - cpu
        share = self.settings.audit_cpu_share
        if share < 1:
            await asyncio.sleep(spent * (1 / share - 1))
        log.debug("audit of %s took %.3fs (%.3fs CPU)", hour_token(hour), time.monotonic() - wall, spent)
        return found
