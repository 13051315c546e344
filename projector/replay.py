"""Replay: rebuild every projection from the stream into a new generation, then switch to it atomically."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from redis.asyncio import Redis

from contract.hours import partition_filter
from contract.settings import Settings
from projector.consumer import decode
from projector.fold import fold
from projector.store import Outcome, ProjectionStore

log = logging.getLogger("replay")


@dataclass(frozen=True, slots=True)
class ReplayReport:
    generation: int
    previous: int | None
    messages: int
    events: int
    seconds: float


async def replay(settings: Settings, nc: NATS, redis_client: Redis) -> ReplayReport:
    """Reads keep serving the old generation until the new one holds the whole stream."""
    started = time.perf_counter()
    store = ProjectionStore.from_settings(redis_client, settings)
    await store.current_generation()
    gen = await store.new_generation()
    log.info("building generation %d from stream %s", gen, settings.stream_name)
    totals = await asyncio.gather(
        *(_build_partition(settings, nc, store, gen, p) for p in range(settings.partitions))
    )
    previous = await store.switch_generation(gen)
    if previous is not None and previous != gen:
        await store.drop_generation(previous)
    messages = sum(t[0] for t in totals)
    events = sum(t[1] for t in totals)
    report = ReplayReport(gen, previous, messages, events, time.perf_counter() - started)
    log.info(
        "generation %d is live (was %s): %d messages, %d events in %.2fs",
        gen,
        previous,
        messages,
        events,
        report.seconds,
    )
    return report


async def _build_partition(
    settings: Settings, nc: NATS, store: ProjectionStore, gen: int, partition: int
) -> tuple[int, int]:
    js = nc.jetstream()
    sub = await js.pull_subscribe(
        partition_filter(settings.subject_prefix, partition),
        stream=settings.stream_name,
        config=ConsumerConfig(
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.ALL,
            inactive_threshold=60.0,
        ),
    )
    watermark = messages = events = 0
    try:
        pending = (await sub.consumer_info()).num_pending or 0
        while pending > 0:
            try:
                msgs = await sub.fetch(max(settings.projector_batch, 1000), timeout=2.0)
            except nats.errors.TimeoutError:
                break
            deltas = fold((decode(m) for m in msgs), after=watermark)
            if deltas:
                result = await store.apply(gen, partition, watermark, deltas, live=False)
                if result.outcome is not Outcome.APPLIED:
                    raise RuntimeError(f"p{partition}: replay apply refused: {result.outcome.name}")
                watermark = result.watermark
            messages += len(msgs)
            events += deltas.events
            pending = msgs[-1].metadata.num_pending
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    log.info("p%d: %d messages, %d events, up to stream seq %d", partition, messages, events, watermark)
    return messages, events
