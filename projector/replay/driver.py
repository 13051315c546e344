"""Replay: rebuild projections from the stream while reads keep serving, then switch atomically.

The whole log goes into a new generation that replaces the live one in one step (a single hour is
rebuilt by `single_hour`). One replay runs at a time (a lock in Redis), and each one first removes
what a killed replay left behind.
"""

from __future__ import annotations

import logging
import os
import time
import uuid

from nats.aio.client import Client as NATS

from contract.keys import Keys
from deploy.projections_client import ProjectionsClient
from deploy.settings import Settings
from projector.log.change_notices import announce
from projector.projections.leases import Leases
from projector.projections.snapshots import Snapshots, open_snapshots
from projector.projections.store import ProjectionStore
from projector.replay.build_processes import build_elsewhere
from projector.replay.lock import replay_lock, seized
from projector.replay.partition_fold import all_or_none, fold_partition, fold_partitions, restore_if_compacted
from projector.replay.reports import Built, ReplayReport, report

log = logging.getLogger("replay")

REPLAY_SPLIT_MESSAGES = 100_000
"""Below this many messages in the stream, starting build processes costs more than it saves."""


async def replay(settings: Settings, nc: NATS, redis_client: ProjectionsClient) -> ReplayReport:
    """Rebuild everything into a new generation; reads keep serving the old one until the switch.

    The bulk of the log is folded while live projectors keep applying. Then their leases are seized
    (they pause, their watermarks freeze), every partition of the new generation folds its tail past
    them, and only then does the generation switch: no count can go backwards at the switch.
    """
    started = time.perf_counter()
    store = ProjectionStore.from_settings(redis_client, settings)
    owner = f"replay-{uuid.uuid4().hex[:8]}"
    partitions = range(settings.partitions)
    async with replay_lock(store, owner, settings.lease_ttl_s):
        live = {p: await store.current_generation(p) for p in partitions}
        await store.drop_orphans()
        # Dead letters below the live watermarks were filed by the live path already.
        filed = {p: await store.watermark(live[p], p) for p in partitions}
        gen = await store.new_generation()
        log.info("building generation %d from stream %s", gen, settings.stream_name)
        switched = False
        try:
            for p in partitions:  # before any apply: build processes read them from Redis
                await store.record_phases(gen, p, settings.day_phases, live=False)
            snapshots = await open_snapshots(nc, redis_client, settings)
            starts = await restore_if_compacted(settings, nc, snapshots, store, gen)
            bulk = await _bulk(settings, nc, store, gen, filed, starts, snapshots)
            leases = Leases(redis_client, Keys(settings.key_prefix), owner, settings.lease_ttl_s)
            async with seized(leases, partitions, settings.lease_ttl_s):
                tail = await all_or_none(
                    [
                        fold_partition(
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
                    ]
                )
                replaced = await store.switch_generation(gen)
                switched = True
        finally:
            if not switched:
                await store.drop_generation(gen)
    await announce(nc, settings, None)
    for old in {g for g in replaced.values() if g is not None and g != gen}:
        await store.drop_generation(old, [p for p, g in replaced.items() if g == old])
    previous = max((g for g in replaced.values() if g is not None), default=None)
    done = report(gen, previous, [*bulk, *tail], started)
    log.info("generation %d is live (was %s)", gen, previous)
    return done


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
        here = await fold_partitions(settings, nc, store, gen, partitions, starts, filed, snapshots)
        return [here[p] for p in partitions]
    log.info("folding %d partitions in %d build processes", len(partitions), processes)
    found = await all_or_none(
        [build_elsewhere(settings, gen, partitions[i::processes], filed, starts) for i in range(processes)]
    )
    built = {p: b for one in found for p, b in one.items()}
    return [built[p] for p in partitions]
