"""Replay: rebuild projections from the stream while reads keep serving, then switch atomically.

The whole log goes into a new generation that replaces the live one in one step; a single hour is
rebuilt beside the live hour under seized partition leases (so its watermarks hold still) and
renamed over it in one step. One replay runs at a time (a lock in Redis), and each one first
removes what a killed replay left behind.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from redis.asyncio import Redis

from contract.hours import hour_token, partition_filter, subject, system_now_ms
from contract.keys import Keys
from contract.settings import Settings
from projector.consumer import announce, dead_letter, digest_fetched
from projector.fold import Deltas
from projector.history import apply_thawing, first_hot_hour
from projector.leases import Leases
from projector.pull import Puller
from projector.snapshots import Snapshots, open_snapshots
from projector.store import Outcome, ProjectionStore, SwapOutcome

log = logging.getLogger("replay")

REPLAY_FETCH = 1000
"""Messages per fetch (and at most `FETCH_MAX_BYTES`): many small live-written messages per apply."""


class ReplayRefused(RuntimeError):
    """The replay could not be done as asked; nothing live was changed."""


@dataclass(frozen=True, slots=True)
class ReplayReport:
    generation: int
    previous: int | None
    messages: int
    events: int
    seconds: float


@dataclass(frozen=True, slots=True)
class Built:
    messages: int
    events: int
    watermark: int


async def replay(settings: Settings, nc: NATS, redis_client: Redis) -> ReplayReport:
    """Rebuild everything into a new generation; reads keep serving the old one until the switch.

    The bulk of the log is folded while live projectors keep applying. Then their leases are seized
    (they pause, their watermarks freeze), every partition of the new generation folds its tail past
    them, and only then does the generation switch: no count can go backwards at the switch.
    """
    started = time.perf_counter()
    store = ProjectionStore.from_settings(redis_client, settings)
    owner = f"replay-{uuid.uuid4().hex[:8]}"
    partitions = range(settings.partitions)
    async with _replay_lock(store, owner, settings.lease_ttl_s):
        live = await store.current_generation()
        await store.drop_orphans(live)
        # Dead letters below the live watermarks were filed by the live path already.
        filed = {p: await store.watermark(live, p) for p in partitions}
        gen = await store.new_generation()
        log.info("building generation %d from stream %s", gen, settings.stream_name)
        switched = False
        try:
            snapshots = await open_snapshots(nc, redis_client, settings)
            starts = await _restore_if_compacted(settings, nc, snapshots, store, gen)
            bulk = await _bulk(settings, nc, store, gen, filed, starts, snapshots)
            leases = Leases(redis_client, Keys(settings.key_prefix), owner, settings.lease_ttl_s)
            async with _seized(leases, partitions, settings.lease_ttl_s):
                tail = await asyncio.gather(
                    *(
                        _build(
                            settings,
                            nc,
                            store,
                            gen,
                            p,
                            filed[p],
                            after=bulk[p].watermark,
                            snapshots=snapshots,
                        )
                        for p in partitions
                    )
                )
                previous = await store.switch_generation(gen)
                switched = True
        finally:
            if not switched:
                await store.drop_generation(gen)
    await announce(nc, settings, None)
    if previous is not None and previous != gen:
        await store.drop_generation(previous)
    report = _report(gen, previous, [*bulk, *tail], started)
    log.info("generation %d is live (was %s)", gen, previous)
    return report


REPLAY_SPLIT_MESSAGES = 100_000
"""Below this many messages in the stream, starting build processes costs more than it saves."""


def replay_processes(settings: Settings, messages: int, cores: int | None) -> int:
    """How many processes fold the bulk of the log: the setting, or one per core once it pays."""
    if settings.replay_processes > 0:
        return min(settings.replay_processes, settings.partitions)
    if messages < REPLAY_SPLIT_MESSAGES:
        return 1
    return max(1, min(settings.partitions, cores or 1))


async def _bulk(
    settings: Settings,
    nc: NATS,
    store: ProjectionStore,
    gen: int,
    filed: dict[int, int],
    starts: dict[int, int],
    snapshots: Snapshots | None,
) -> list[Built]:
    """Every partition folded into `gen`: here, or split over build processes (one core each)."""
    partitions = list(range(settings.partitions))
    messages = (await nc.jetstream().stream_info(settings.stream_name)).state.messages
    processes = replay_processes(settings, messages, os.cpu_count())
    if processes <= 1:
        here = await _build_each(settings, nc, store, gen, partitions, starts, filed, snapshots)
        return [here[p] for p in partitions]
    log.info("folding %d partitions in %d build processes", len(partitions), processes)
    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(_build_elsewhere(settings, gen, partitions[i::processes], filed, starts))
            for i in range(processes)
        ]
    built = {p: b for task in tasks for p, b in task.result().items()}
    return [built[p] for p in partitions]


class BuildJob(msgspec.Struct, frozen=True):
    """What a build process (`python -m projector build`) reads from its stdin: never from its
    arguments, which any user of the machine can list."""

    settings: dict[str, str]
    parent: int
    """The replay's pid: a build whose replay is gone stops."""
    generation: int
    partitions: list[int]
    after: list[int]
    dead_letters_above: list[int]


async def _build_elsewhere(
    settings: Settings, gen: int, partitions: list[int], filed: dict[int, int], starts: dict[int, int]
) -> dict[int, Built]:
    job = BuildJob(
        settings.as_env(),
        os.getpid(),
        gen,
        partitions,
        [starts[p] for p in partitions],
        [filed[p] for p in partitions],
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "projector",
        "build",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        out, _ = await proc.communicate(msgspec.json.encode(job))
    finally:
        if proc.returncode is None:  # cancelled: another build failed, or the replay was stopped
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise ReplayRefused(
            f"the build process for partitions {partitions} failed (exit {proc.returncode}); its log is above"
        )
    return msgspec.json.decode(out.splitlines()[-1], type=dict[int, Built])


async def build_partitions(job: BuildJob, nc: NATS, redis_client: Redis) -> dict[int, Built]:
    """A build process's work: its partitions folded into the job's generation, as `replay` would."""
    settings = Settings.from_env(job.settings)
    store = ProjectionStore.from_settings(redis_client, settings)
    snapshots = await open_snapshots(nc, redis_client, settings)
    starts = dict(zip(job.partitions, job.after, strict=True))
    filed = dict(zip(job.partitions, job.dead_letters_above, strict=True))
    return await _build_each(settings, nc, store, job.generation, job.partitions, starts, filed, snapshots)


async def _build_each(
    settings: Settings,
    nc: NATS,
    store: ProjectionStore,
    gen: int,
    partitions: list[int],
    starts: dict[int, int],
    filed: dict[int, int],
    snapshots: Snapshots | None,
) -> dict[int, Built]:
    """These partitions folded into `gen` side by side, each from its start."""
    built = await asyncio.gather(
        *(
            _build(settings, nc, store, gen, p, filed[p], after=starts[p], snapshots=snapshots)
            for p in partitions
        )
    )
    return dict(zip(partitions, built, strict=True))


async def replay_hour(settings: Settings, nc: NATS, redis_client: Redis, hour: int) -> ReplayReport:
    """Rebuild one hour. Projectors pause (fenced) for the few seconds this takes; reads do not."""
    started = time.perf_counter()
    store = ProjectionStore.from_settings(redis_client, settings)
    owner = f"replay-{uuid.uuid4().hex[:8]}"
    leases = Leases(redis_client, Keys(settings.key_prefix), owner, settings.lease_ttl_s)
    partitions = range(settings.partitions)
    async with _replay_lock(store, owner, settings.lease_ttl_s):
        gen = await store.current_generation()
        await store.drop_orphans(gen)
        rebuilt = await store.new_generation()  # a scratch generation of its own, swapped in by hour
        try:
            async with _seized(leases, partitions, settings.lease_ttl_s) as epochs:
                # With the fences raised no projector can apply, so these watermarks hold still.
                watermarks = {p: await store.watermark(gen, p) for p in partitions}
                snapshots = await open_snapshots(nc, redis_client, settings)
                starts = await _restore_if_compacted(settings, nc, snapshots, store, rebuilt, only_hour=hour)
                built = await asyncio.gather(
                    *(
                        _build(
                            settings,
                            nc,
                            store,
                            rebuilt,
                            p,
                            watermarks[p],
                            after=starts[p],
                            subject_filter=subject(settings.subject_prefix, hour, p),
                            upto=watermarks[p],
                        )
                        for p in partitions
                    )
                )
                outcome = await store.swap_hour(gen, rebuilt, hour, epochs, watermarks)
                if outcome is SwapOutcome.GENERATION_MOVED:
                    raise ReplayRefused(
                        f"a full replay switched generations while hour {hour_token(hour)} was rebuilt; "
                        "nothing was written (the new generation already holds the hour)"
                    )
                if outcome is SwapOutcome.FENCED:
                    raise ReplayRefused("another replay seized the partitions meanwhile; nothing was changed")
            await announce(nc, settings, (hour,))
        finally:
            await store.drop_generation(rebuilt)
    report = _report(gen, gen, built, started)
    log.info("hour %s rebuilt in generation %d", hour_token(hour), gen)
    return report


async def _restore_if_compacted(
    settings: Settings,
    nc: NATS,
    snapshots: Snapshots | None,
    store: ProjectionStore,
    gen: int,
    only_hour: int | None = None,
) -> dict[int, int]:
    """Where each partition's fold starts: 0 while the log is whole; once compaction has purged its
    beginning, the partition's snapshot is put into `gen` first (its hours older than the hot window
    only named as cold) and the fold starts after it."""
    partitions = range(settings.partitions)
    first = (await nc.jetstream().stream_info(settings.stream_name)).state.first_seq
    if first <= 1:
        return dict.fromkeys(partitions, 0)
    if snapshots is None:
        raise ReplayRefused(
            f"the log starts at stream seq {first} and there is no snapshot store to cover the rest"
        )
    starts = {}
    for p in partitions:
        manifest, _ = await snapshots.manifest(p)
        if manifest is None or manifest.watermark + 1 < first:
            raise ReplayRefused(
                f"p{p}: the log starts at stream seq {first} but no snapshot covers what came before; "
                "nothing was changed"
            )
        starts[p] = await snapshots.restore(
            gen,
            p,
            "",
            store,
            live=False,
            only_hour=only_hour,
            hot_from=first_hot_hour(system_now_ms(), settings.hot_hours),
        )
    what = f"hour {hour_token(only_hour)}" if only_hour is not None else "every hour"
    log.info(
        "events before stream seq %d were compacted: %s restored from the snapshots (at seqs %s), "
        "then the rest of the log folded",
        first,
        what,
        ", ".join(str(starts[p]) for p in partitions),
    )
    return starts


@contextlib.asynccontextmanager
async def _replay_lock(store: ProjectionStore, owner: str, ttl_s: float) -> AsyncIterator[None]:
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
async def _seized(leases: Leases, partitions: range, ttl_s: float) -> AsyncIterator[dict[int, str]]:
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


async def _build(
    settings: Settings,
    nc: NATS,
    store: ProjectionStore,
    gen: int,
    partition: int,
    dead_letter_above: int,
    *,
    after: int = 0,
    subject_filter: str | None = None,
    upto: int | None = None,
    snapshots: Snapshots | None = None,
) -> Built:
    """Fold every message on the partition (or `subject_filter`) after stream seq `after`, up to
    `upto`, into `gen`'s keys, whose watermark for the partition is `after` to begin with.

    A whole-partition build ends with the watermark at the stream's last sequence as it was when the
    build began: everything of the partition up to there is applied, so no retention gap is seen later.
    """
    js = nc.jetstream()
    whole = subject_filter is None
    last = (await js.stream_info(settings.stream_name)).state.last_seq
    consumer = await js.add_consumer(
        settings.stream_name,
        ConsumerConfig(
            filter_subject=subject_filter or partition_filter(settings.subject_prefix, partition),
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if after else DeliverPolicy.ALL,
            opt_start_seq=after + 1 if after else None,
            inactive_threshold=60.0,
        ),
    )
    name = consumer.name
    puller = Puller(nc, settings.stream_name, name)
    watermark = after
    messages = events = stalls = 0
    try:
        pending = consumer.num_pending or 0
        while pending > 0:
            try:
                fetched = await puller.fetch(REPLAY_FETCH, 5.0)
            except TimeoutError:
                # Never take a quiet moment for the end: ask the server what is left.
                pending = (await js.consumer_info(settings.stream_name, name)).num_pending or 0
                stalls += 1
                if pending and stalls > 5:
                    raise ReplayRefused(
                        f"p{partition}: replay stalled with {pending} messages left"
                    ) from None
                continue
            stalls = 0
            last_seq = fetched.seqs[-1]
            if upto is not None:
                # Without acks nothing is redelivered, so stream sequences only rise within a fetch.
                fetched = fetched.head(bisect.bisect_right(fetched.seqs, upto))
            done = digest_fetched(fetched, settings, after=watermark)
            if done.unknown is not None:
                raise ReplayRefused(
                    f"p{partition}: stream seq {fetched.seqs[done.digested]}: {done.unknown}; "
                    "upgrade this projector first"
                )
            for i, why in done.rejected:
                if fetched.seqs[i] > dead_letter_above:
                    await dead_letter(js, settings, partition, fetched.at(i), why)
            deltas = done.deltas
            if deltas:
                watermark = await _apply(store, gen, partition, watermark, deltas, snapshots)
            messages += done.digested
            events += deltas.events
            pending = fetched.pending
            if upto is not None and last_seq >= upto:
                break
    finally:
        await puller.close()
        with contextlib.suppress(Exception):
            await js.delete_consumer(settings.stream_name, name)
    if whole and last > watermark:
        watermark = await _apply(store, gen, partition, watermark, Deltas(last_seq=last))
    log.info("p%d: %d messages, %d events, up to stream seq %d", partition, messages, events, watermark)
    return Built(messages, events, watermark)


async def _apply(
    store: ProjectionStore,
    gen: int,
    partition: int,
    watermark: int,
    deltas: Deltas,
    snapshots: Snapshots | None = None,
) -> int:
    result = await apply_thawing(store, snapshots, gen, partition, watermark, deltas, live=False)
    if result.outcome is not Outcome.APPLIED:
        raise ReplayRefused(f"p{partition}: replay apply refused: {result.outcome.name}")
    return result.watermark


def _report(gen: int, previous: int | None, built: list[Built], started: float) -> ReplayReport:
    return ReplayReport(
        gen,
        previous,
        sum(b.messages for b in built),
        sum(b.events for b in built),
        time.perf_counter() - started,
    )
