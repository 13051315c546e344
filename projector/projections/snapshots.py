"""Snapshots of the projections in a JetStream key-value bucket: written by each partition's worker,
restored by it when Redis has lost the partition.

A snapshot is a consistent cut of one partition at one watermark: immutable hour entries (the
HyperLogLog as Redis stores it, and the counters, of the hour and of each of its quarter-hours), day
rollup entries (under their `d...` tokens, as an hour without quarters), the idempotency entries inside
the window, and a manifest naming them, written last. Restoring it, then folding the stream after its
watermark, gives exactly the projections the live path had. Only the partition's lease holder writes,
between its own applies, so nothing changes under a snapshot while it is read; the manifest is updated
with compare-and-set and never moves backwards.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from contract import schema
from contract.buckets import (
    DAY_MS,
    MINUTE_MS,
    QUARTERS_PER_HOUR,
    day_tokens,
    is_day_token,
    owning_hour,
    parse_day_token,
    parse_phases,
    quarter_token,
)
from contract.cells import COUNTERS, Cell, CellLayout
from contract.hours import parse_hour_token
from contract.keys import Keys
from contract.stream import snapshot_bucket, snapshot_dedup_key, snapshot_hour_key, snapshot_manifest_key
from deploy.projections_client import ProjectionsClient
from deploy.settings import Settings
from projector.projections.hot_window import rebuild_day_thawing
from projector.projections.store import DayOutcome, ProjectionStore, RestoreRefused

log = logging.getLogger("projector")

READ_CHUNK = 200
"""Hours read from Redis per pipelined round trip."""


@dataclass(frozen=True, slots=True)
class Written:
    watermark: int
    hours: int


class Snapshots:
    def __init__(self, kv: KeyValue, redis: ProjectionsClient, keys: Keys) -> None:
        self._kv = kv
        self._redis = redis
        self._keys = keys

    async def manifest(self, partition: int) -> tuple[schema.Manifest | None, int]:
        """The partition's manifest and its revision (0: none yet)."""
        try:
            entry = await self._kv.get(snapshot_manifest_key(partition))
        except KeyNotFoundError:
            return None, 0
        if entry.value is None:
            return None, 0
        return schema.unpack_manifest(entry.value), entry.revision or 0

    async def covered(self, partitions: int) -> int | None:
        """The lowest watermark the partitions' manifests cover (None: a partition has no cut yet, and
        needs its whole log)."""
        covered: int | None = None
        for partition in range(partitions):
            manifest, _ = await self.manifest(partition)
            if manifest is None:
                return None
            covered = manifest.watermark if covered is None else min(covered, manifest.watermark)
        return covered

    async def write(self, gen: int, partition: int) -> Written | None:
        """Snapshot the hours that changed since the last cut; None when nothing changed.

        Call only between this partition's own applies: the reads below are several round trips.
        """
        keys, redis = self._keys, self._redis
        raw_wm, dirty, dedup = await _read(redis, keys, gen, partition)
        watermark = int(raw_wm or 0)
        old, revision = await self.manifest(partition)
        if watermark == 0 or (old is not None and old.watermark > watermark):
            return None
        if old is not None and old.watermark == watermark and not dirty:
            return None
        # Hours changed at the cut's own watermark (a replay's new generation, an hour a single-hour
        # replay swapped in) are written again under it: the cut then holds what Redis holds there.
        if not dirty and old is not None:
            # Nothing changed but the position (a quiet partition following the log's head): move the
            # cut forward, so that compaction is not held back by partitions nobody writes to.
            moved = schema.Manifest(watermark=watermark, hours=old.hours, dedup=old.dedup)
            await self._kv.update(snapshot_manifest_key(partition), schema.pack(moved), last=revision)
            return Written(watermark, 0)
        tokens = [t.decode() if isinstance(t, bytes) else str(t) for t, _ in dirty]
        for start in range(0, len(tokens), READ_CHUNK):
            chunk = tokens[start : start + READ_CHUNK]
            for token, state in zip(chunk, await _states(redis, keys, gen, partition, chunk), strict=True):
                await self._kv.put(snapshot_hour_key(partition, token, watermark), schema.pack(state))
        entries = [(m.decode() if isinstance(m, bytes) else str(m), int(score)) for m, score in dedup]
        await self._kv.put(snapshot_dedup_key(partition, watermark), schema.pack(schema.DedupState(entries)))
        hours = dict(old.hours) if old is not None else {}
        hours.update(dict.fromkeys(tokens, watermark))
        manifest = schema.Manifest(watermark=watermark, hours=hours, dedup=watermark)
        # Compare-and-set: a projector that lost this partition cannot move the manifest backwards.
        await self._kv.update(snapshot_manifest_key(partition), schema.pack(manifest), last=revision)
        await redis.zremrangebyscore(keys.dirty(gen, partition), "-inf", watermark)
        if old is not None:
            await self._forget(partition, old, manifest)
        return Written(watermark, len(tokens))

    async def _forget(self, partition: int, old: schema.Manifest, new: schema.Manifest) -> None:
        """Entries the new manifest no longer names (best effort: a crash here leaves only garbage)."""
        stale = [
            snapshot_hour_key(partition, token, at)
            for token, at in old.hours.items()
            if new.hours.get(token) != at
        ]
        if old.dedup != new.dedup:
            stale.append(snapshot_dedup_key(partition, old.dedup))
        for key in stale:
            await self._kv.purge(key)

    async def entry(self, partition: int, token: str, at: int) -> schema.HourState:
        """One hour of one partition as the snapshot at `at` holds it."""
        found = await self._kv.get(snapshot_hour_key(partition, token, at))
        if found.value is None:
            raise KeyNotFoundError
        return schema.unpack_hour(found.value)

    async def restore(
        self,
        gen: int,
        partition: int,
        epoch: str,
        store: ProjectionStore,
        *,
        live: bool = True,
        only_hour: int | None = None,
        hot_from: int | None = None,
    ) -> int:
        """Put the partition's last snapshot (or one hour of it) into a generation that has no
        watermark for it; returns the snapshot's watermark (0: there is none). Hours before `hot_from`
        stay in the store: ProjectionsClient only names them as cold. Day rollups go back for the
        phases `gen` keeps (recorded before this); those the snapshot lacks are rebuilt from hours."""
        manifest, _ = await self.manifest(partition)
        if manifest is None:
            return 0
        started = time.perf_counter()
        phases = parse_phases(await self._redis.get(self._keys.phases(gen, partition)))
        wanted: list[tuple[str, int]] = []
        cold: list[tuple[int, int]] = []
        for token, at in manifest.hours.items():
            hour = owning_hour(token)
            if only_hour is not None and hour != only_hour:
                continue  # a day rollup too: a single-hour replay rebuilds the days it touches
            if hour is None and parse_day_token(token) % DAY_MS // MINUTE_MS not in phases:
                continue  # kept by the snapshot's generation, not by this one
            if only_hour is None and hot_from is not None and hour is not None and hour < hot_from:
                cold.append((hour, at))
            else:
                wanted.append((token, at))  # every day rollup: they are never cold
        entries: list[tuple[str, schema.HourState]] = []
        for start in range(0, len(wanted), READ_CHUNK):
            chunk = wanted[start : start + READ_CHUNK]
            try:
                states = await asyncio.gather(*(self.entry(partition, t, at) for t, at in chunk))
            except KeyNotFoundError:
                raise RuntimeError(
                    f"a snapshot entry of p{partition} named by its manifest is missing"
                ) from None
            entries += [(token, state) for (token, _), state in zip(chunk, states, strict=True)]
        hours = [(parse_hour_token(t), state) for t, state in entries if not is_day_token(t)]
        days = [(t, state) for t, state in entries if is_day_token(t)]
        dedup_entry = await self._kv.get(snapshot_dedup_key(partition, manifest.dedup))
        dedup = schema.unpack_dedup(dedup_entry.value or b"")
        await store.restore(
            gen, partition, epoch, manifest.watermark, hours, dedup.entries, live=live, cold=cold, days=days
        )
        filled = (
            0
            if only_hour is not None
            else await self._fill_days(manifest, store, gen, partition, epoch, live, phases)
        )
        log.info(
            "p%d: restored %d hours and %d day rollups (%d rebuilt from hours) from the snapshot at stream "
            "seq %d in %.2fs (%d left cold in the store)",
            partition,
            len(hours),
            len(days) + filled,
            filled,
            manifest.watermark,
            time.perf_counter() - started,
            len(cold),
        )
        return manifest.watermark

    async def _fill_days(
        self,
        manifest: schema.Manifest,
        store: ProjectionStore,
        gen: int,
        partition: int,
        epoch: str,
        live: bool,
        phases: tuple[int, ...],
    ) -> int:
        """Rebuild from their hours and quarter-hours the day rollups of `phases` that the snapshot's
        hours overlap but it does not hold (its generation kept other phases, or none: from before day
        rollups; an hour entry without quarter-hours adds only its whole hour). Returns how many."""
        if not phases:
            return 0
        needed = {
            day
            for token in manifest.hours
            if not is_day_token(token)
            for q in range(QUARTERS_PER_HOUR)
            for day in day_tokens(parse_hour_token(token), q, phases)
        }
        missing = sorted(needed - manifest.hours.keys())
        for day in missing:
            outcome = await rebuild_day_thawing(store, self, gen, partition, day, epoch=epoch, live=live)
            if outcome is not DayOutcome.REBUILT:
                raise RestoreRefused(f"p{partition}: restore refused while rebuilding {day} ({outcome.name})")
        return len(missing)


async def _read(
    redis: ProjectionsClient, keys: Keys, gen: int, partition: int
) -> tuple[bytes | None, list[tuple[bytes, float]], list[tuple[bytes, float]]]:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.watermark(gen, partition))
        pipe.zrange(keys.dirty(gen, partition), 0, -1, withscores=True)
        pipe.zrange(keys.dedup(gen, partition), 0, -1, withscores=True)
        raw_wm, dirty, dedup = await pipe.execute()
    return raw_wm, dirty, dedup


async def _states(
    redis: ProjectionsClient, keys: Keys, gen: int, partition: int, tokens: list[str]
) -> list[schema.HourState]:
    """The entries of dirty tokens as Redis holds them now: an hour with its 4 quarter-hours, a day
    rollup alone."""
    cells = {t: [t] if is_day_token(t) else _hour_and_quarters(t) for t in tokens}
    layout = CellLayout(keys)
    async with redis.pipeline(transaction=False) as pipe:
        for token in tokens:
            for cell in cells[token]:
                pipe.get(layout.users(Cell(gen, partition, cell)))
                pipe.hmget(layout.counts(Cell(gen, partition, cell)), *COUNTERS)
        replies = iter(await pipe.execute())
    states = []
    for token in tokens:
        read = []
        for _ in cells[token]:
            hll, (clicks, impressions) = next(replies), next(replies)
            read.append(schema.CellState(hll, int(clicks or 0), int(impressions or 0)))
        head = read[0]
        states.append(schema.HourState(head.hll, head.clicks, head.impressions, tuple(read[1:])))
    return states


def _hour_and_quarters(token: str) -> list[str]:
    hour = parse_hour_token(token)
    return [token] + [quarter_token(hour, q) for q in range(QUARTERS_PER_HOUR)]


async def open_snapshots(nc: NATS, redis: ProjectionsClient, settings: Settings) -> Snapshots | None:
    """The snapshot store of the stream, or None when its bucket does not exist (yet)."""
    try:
        kv = await nc.jetstream().key_value(snapshot_bucket(settings.stream_name))
    except NotFoundError:
        return None
    return Snapshots(kv, redis, Keys(settings.key_prefix))
