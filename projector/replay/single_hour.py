"""Replay of one hour: rebuilt beside the live hour under seized partition leases (so its watermarks
hold still), its keys judged as live judged them (`fold_hour`), then renamed over it with its
quarter-hours in one step; the day rollups overlapping the hour are then rebuilt from their
components, under the same leases."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from nats.aio.client import Client as NATS

from contract.buckets import QUARTERS_PER_HOUR, day_tokens
from contract.hours import hour_token
from contract.keys import Keys
from deploy.projections_client import ProjectionsClient
from deploy.settings import Settings
from projector.log.change_notices import announce
from projector.log.hour_log import read_hour_log
from projector.projections.hot_window import rebuild_day_thawing
from projector.projections.leases import Leases
from projector.projections.snapshots import Snapshots, open_snapshots
from projector.projections.store import DayOutcome, ProjectionStore, SwapOutcome
from projector.replay.lock import replay_lock, seized
from projector.replay.partition_fold import fold_hour, restore_if_compacted
from projector.replay.reports import ReplayRefused, ReplayReport, report

log = logging.getLogger("replay")


async def replay_hour(
    settings: Settings, nc: NATS, redis_client: ProjectionsClient, hour: int
) -> ReplayReport:
    """Rebuild one hour. Projectors pause (fenced) for the few seconds this takes; reads do not."""
    started = time.perf_counter()
    store = ProjectionStore.from_settings(redis_client, settings)
    owner = f"replay-{uuid.uuid4().hex[:8]}"
    leases = Leases(redis_client, Keys(settings.key_prefix), owner, settings.lease_ttl_s)
    partitions = range(settings.partitions)
    async with replay_lock(store, owner, settings.lease_ttl_s):
        gens = {p: await store.current_generation(p) for p in partitions}
        gen = max(gens.values())
        await store.drop_orphans()
        rebuilt = await store.new_generation()  # a scratch generation of its own, swapped in by hour
        try:
            async with seized(leases, partitions, settings.lease_ttl_s) as epochs:
                # With the fences raised no projector can apply, so these watermarks hold still.
                watermarks = {p: await store.watermark(gens[p], p) for p in partitions}
                snapshots = await open_snapshots(nc, redis_client, settings)
                starts = await restore_if_compacted(settings, nc, snapshots, store, rebuilt, only_hour=hour)
                found = await read_hour_log(nc, settings, hour)
                for p in partitions:  # the live phases: a split hour's quarter-hours get axes as live's
                    await store.record_phases(rebuilt, p, await store.phases(gens[p], p), live=False)
                built = await asyncio.gather(
                    *(
                        fold_hour(
                            settings,
                            nc,
                            store,
                            rebuilt,
                            p,
                            hour,
                            found.columns(p),
                            after=starts[p],
                            upto=watermarks[p],
                        )
                        for p in partitions
                    )
                )
                outcome = await store.swap_hour(gens, rebuilt, hour, epochs, watermarks)
                if outcome is SwapOutcome.GENERATION_MOVED:
                    raise ReplayRefused(
                        f"a full replay switched generations while hour {hour_token(hour)} was rebuilt; "
                        "nothing was written (the new generation already holds the hour)"
                    )
                if outcome is SwapOutcome.FENCED:
                    raise ReplayRefused("another replay seized the partitions meanwhile; nothing was changed")
                for p in partitions:
                    await rebuild_days(store, snapshots, gens[p], p, hour, epochs[p])
            await announce(nc, settings, (hour,))
        finally:
            await store.drop_generation(rebuilt)
    done = report(gen, gen, built, started)
    log.info("hour %s rebuilt in generation %d", hour_token(hour), gen)
    return done


async def rebuild_days(
    store: ProjectionStore,
    snapshots: Snapshots | None,
    gen: int,
    partition: int,
    hour: int,
    epoch: str,
) -> None:
    """Rebuild every day rollup of the generation (each of its phases) that overlaps `hour` from its
    components, now that the hour is new: a day starting inside the hour overlaps it too."""
    phases = await store.phases(gen, partition)
    days = sorted({day for q in range(QUARTERS_PER_HOUR) for day in day_tokens(hour, q, phases)})
    for day in days:
        outcome = await rebuild_day_thawing(store, snapshots, gen, partition, day, epoch=epoch)
        if outcome is not DayOutcome.REBUILT:
            raise ReplayRefused(
                f"hour {hour_token(hour)} was swapped in but p{partition}'s day rollup {day} could not be "
                f"rebuilt ({outcome.name.lower().replace('_', ' ')}): ./just audit --repair rebuilds it"
            )
