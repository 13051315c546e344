"""Replay: rebuild projections from the stream while reads keep serving, then switch atomically.

The whole log goes into a new generation that replaces the live one in one step; a single hour is
rebuilt beside the live hour under seized partition leases (so its watermarks hold still) and
renamed over it in one step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from redis.asyncio import Redis

from contract.hours import hour_token, partition_filter, subject
from contract.keys import Keys
from contract.schema import UnknownVersion
from contract.settings import Settings
from projector.consumer import announce, dead_letter, read
from projector.fold import fold
from projector.leases import Leases
from projector.store import Outcome, ProjectionStore

log = logging.getLogger("replay")

REPLAY_FETCH = 200
"""Messages per fetch: a group-committed message can hold 1000 events, so this bounds a fetch to
about 12 MB and keeps the connection clear of nats-server's slow-consumer limit."""


@dataclass(frozen=True, slots=True)
class ReplayReport:
    generation: int
    previous: int | None
    messages: int
    events: int
    seconds: float


async def replay(settings: Settings, nc: NATS, redis_client: Redis) -> ReplayReport:
    """Rebuild everything into a new generation; reads keep serving the old one until the switch."""
    started = time.perf_counter()
    store = ProjectionStore.from_settings(redis_client, settings)
    await store.current_generation()
    gen = await store.new_generation()
    log.info("building generation %d from stream %s", gen, settings.stream_name)
    totals = await asyncio.gather(
        *(
            _build(settings, nc, store, gen, p, partition_filter(settings.subject_prefix, p))
            for p in range(settings.partitions)
        )
    )
    previous = await store.switch_generation(gen)
    await announce(nc, settings, None)
    if previous is not None and previous != gen:
        await store.drop_generation(previous)
    report = _report(gen, previous, totals, started)
    log.info("generation %d is live (was %s)", gen, previous)
    return report


async def replay_hour(settings: Settings, nc: NATS, redis_client: Redis, hour: int) -> ReplayReport:
    """Rebuild one hour. Projectors pause (fenced) for the few seconds this takes; reads do not."""
    started = time.perf_counter()
    store = ProjectionStore.from_settings(redis_client, settings)
    keys = Keys(settings.key_prefix)
    leases = Leases(redis_client, keys, f"replay-{uuid.uuid4().hex[:8]}", settings.lease_ttl_s)
    gen = await store.current_generation()
    rebuilt = f"{gen}-rebuild-{hour_token(hour)}-{uuid.uuid4().hex[:6]}"
    partitions = range(settings.partitions)
    epochs = {p: str(await leases.seize(p)) for p in partitions}
    keeper = asyncio.create_task(_keep_leases(leases, partitions, settings.lease_ttl_s / 3))
    try:
        # With the fences raised no projector can apply, so these watermarks hold still.
        watermarks = {p: await store.watermark(gen, p) for p in partitions}
        totals = await asyncio.gather(
            *(
                _build(
                    settings,
                    nc,
                    store,
                    rebuilt,
                    p,
                    subject(settings.subject_prefix, hour, p),
                    upto=watermarks[p],
                )
                for p in partitions
            )
        )
        if not await store.swap_hour(gen, rebuilt, hour, epochs):
            raise RuntimeError("another replay seized the partitions meanwhile; nothing was changed")
        await announce(nc, settings, (hour,))
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        await store.drop_generation(rebuilt)
        for p in partitions:
            await leases.release(p)
    report = _report(gen, gen, totals, started)
    log.info("hour %s rebuilt in generation %d", hour_token(hour), gen)
    return report


async def _keep_leases(leases: Leases, partitions: range, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        for p in partitions:
            await leases.renew(p)


async def _build(
    settings: Settings,
    nc: NATS,
    store: ProjectionStore,
    gen: int | str,
    partition: int,
    subject_filter: str,
    upto: int | None = None,
    dead_letter_above: int = 0,
) -> tuple[int, int]:
    """Fold every message on `subject_filter` (up to stream seq `upto`) into `gen`'s keys."""
    js = nc.jetstream()
    sub = await js.pull_subscribe(
        subject_filter,
        stream=settings.stream_name,
        config=ConsumerConfig(
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.ALL,
            inactive_threshold=60.0,
        ),
    )
    watermark = messages = events = stalls = 0
    try:
        pending = (await sub.consumer_info()).num_pending or 0
        while pending > 0:
            try:
                msgs = await sub.fetch(REPLAY_FETCH, timeout=5.0)
            except TimeoutError:  # nats-py raises its own subclass or the builtin
                # Never take a quiet moment for the end: ask the server what is left.
                pending = (await sub.consumer_info()).num_pending or 0
                stalls += 1
                if pending and stalls > 5:
                    raise RuntimeError(f"p{partition}: replay stalled with {pending} messages left") from None
                continue
            stalls = 0
            decoded = []
            for msg in msgs:
                try:
                    item = read(msg, settings)
                except UnknownVersion as exc:
                    seq = msg.metadata.sequence.stream
                    raise RuntimeError(
                        f"p{partition}: stream seq {seq}: {exc}; upgrade this projector first"
                    ) from None
                if upto is not None and item.message.seq > upto:
                    continue
                if item.rejected and item.message.seq > dead_letter_above:
                    await dead_letter(js, settings, partition, item)
                decoded.append(item.message)
            deltas = fold(decoded, after=watermark)
            if deltas:
                result = await store.apply(gen, partition, watermark, deltas, live=False)
                if result.outcome is not Outcome.APPLIED:
                    raise RuntimeError(f"p{partition}: replay apply refused: {result.outcome.name}")
                watermark = result.watermark
            messages += len(decoded)
            events += deltas.events
            pending = msgs[-1].metadata.num_pending
            if upto is not None and msgs[-1].metadata.sequence.stream >= upto:
                break
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    log.info("p%d: %d messages, %d events, up to stream seq %d", partition, messages, events, watermark)
    return messages, events


def _report(gen: int, previous: int | None, totals: list[tuple[int, int]], started: float) -> ReplayReport:
    return ReplayReport(
        gen,
        previous,
        sum(t[0] for t in totals),
        sum(t[1] for t in totals),
        time.perf_counter() - started,
    )
