"""The hot window: which hours Redis keeps, moving older ones (with their quarter-hours) out once
snapshotted, and thawing them again when late events arrive for them or a day rollup is rebuilt from
them; day rollups always stay. Shared by the live worker and by replay."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from nats.js.errors import KeyNotFoundError

from contract.buckets import is_day_token
from contract.hours import hour_of, hour_token, parse_hour_token
from projector import metrics
from projector.fold.deltas import Deltas
from projector.projections.store import ApplyResult, DayOutcome, Outcome, ProjectionStore, Thawed

if TYPE_CHECKING:  # snapshots.py uses this module to rebuild day rollups on restore
    from projector.projections.snapshots import Snapshots

log = logging.getLogger("projector")

THAW_ATTEMPTS = 5
"""Applies retried after thawing: each round thaws what the last one found cold."""


def first_hot_hour(now_ms: int, hot_hours: int) -> int | None:
    """The oldest hour Redis keeps: the current hour and the `hot_hours - 1` before it (and every
    later one) are hot. None: no window, every hour stays."""
    if hot_hours <= 0:
        return None
    return hour_of(now_ms) - (hot_hours - 1)


async def apply_thawing(
    store: ProjectionStore,
    snapshots: Snapshots | None,
    gen: int,
    partition: int,
    expected: int,
    deltas: Deltas,
    *,
    epoch: str = "",
    live: bool = True,
) -> ApplyResult:
    """Apply; when the deltas touch cold hours, put them back from their snapshot entries first, so
    late events add to the hour's counts instead of starting them over."""
    for _ in range(THAW_ATTEMPTS):
        result = await store.apply(gen, partition, expected, deltas, epoch=epoch, live=live)
        if result.outcome is not Outcome.COLD:
            return result
        if snapshots is None:
            raise RuntimeError(
                f"p{partition}: hours are cold but there is no snapshot store to thaw them from"
            )
        thawed = await _entries(snapshots, partition, result.cold)
        if not await store.thaw(gen, partition, epoch, expected, thawed, live=live):
            return await store.apply(gen, partition, expected, deltas, epoch=epoch, live=live)
        metrics.THAWED.inc(len(thawed))
        log.info(
            "p%d: late events for %d cold hour(s) (%s): thawed from the snapshot store",
            partition,
            len(thawed),
            ", ".join(token for token, _ in result.cold[:5]),
        )
    raise RuntimeError(f"p{partition}: hours kept turning cold while late events were applied")


async def rebuild_day_thawing(
    store: ProjectionStore,
    snapshots: Snapshots | None,
    gen: int,
    partition: int,
    day_token: str,
    *,
    epoch: str = "",
    live: bool = True,
) -> DayOutcome:
    """Rebuild a day rollup from its components (ProjectionStore.rebuild_day), first putting back from
    their snapshot entries the cold hours that hold some of them: REBUILT, FENCED or GENERATION_MOVED."""
    for _ in range(THAW_ATTEMPTS):
        result = await store.rebuild_day(gen, partition, day_token, epoch, live=live)
        if result.outcome is not DayOutcome.COLD:
            return result.outcome
        if snapshots is None:
            raise RuntimeError(
                f"p{partition}: hours of {day_token} are cold and there is no snapshot store to thaw from"
            )
        thawed = await _entries(snapshots, partition, result.cold)
        # Thaw checks the watermark it is given: applies may go on meanwhile, so a refusal is tried again.
        watermark = await store.watermark(gen, partition)
        if await store.thaw(gen, partition, epoch, watermark, thawed, live=live, mark=True):
            metrics.THAWED.inc(len(thawed))
    raise RuntimeError(f"p{partition}: hours of {day_token} kept turning cold while it was rebuilt")


async def _entries(snapshots: Snapshots, partition: int, cold: tuple[tuple[str, int], ...]) -> list[Thawed]:
    """The cold hours as their snapshot entries hold them."""
    try:
        return [
            Thawed(parse_hour_token(token), at, await snapshots.entry(partition, token, at))
            for token, at in cold
        ]
    except KeyNotFoundError:  # loud, not "stream not found yet": nothing will bring the entry back
        raise RuntimeError(
            f"p{partition}: a cold hour's snapshot entry is gone (Redis went back in time past a newer "
            "snapshot of the hour?); ./just replay makes the partition exact"
        ) from None


class Evictor:
    """Moves a partition's hours older than the window out of Redis once a snapshot holds them.

    It remembers which snapshot entry of each hour it moved, so each round sends Redis only hours that
    newly fell out of the window or were snapshotted again (after a thaw); a new Evictor (a new worker,
    a new generation) starts by asking about all of them.
    """

    def __init__(self, store: ProjectionStore, snapshots: Snapshots, gen: int, partition: int) -> None:
        self._store = store
        self._snapshots = snapshots
        self.gen = gen
        self._partition = partition
        self._moved: dict[str, int] = {}

    async def run(self, epoch: str, watermark: int, hot_from: int) -> int:
        """Returns how many hours left Redis, or -1 when someone else moved the partition meanwhile."""
        manifest, _ = await self._snapshots.manifest(self._partition)
        if manifest is None:
            return 0
        due = [
            (parse_hour_token(token), at)
            for token, at in manifest.hours.items()
            if not is_day_token(token)  # day rollups always stay: long ranges read them
            and self._moved.get(token) != at
            and parse_hour_token(token) < hot_from
        ]
        if not due:
            return 0
        moved = await self._store.evict(self.gen, self._partition, epoch, watermark, due)
        if moved < 0:
            return -1
        # A dirty hour was skipped; it is asked about again after the snapshot that takes it.
        cold = await self._store.cold_hours(self.gen, self._partition) if moved < len(due) else {}
        for hour, at in due:
            if moved == len(due) or cold.get(hour) == at:
                self._moved[hour_token(hour)] = at
        if moved:
            metrics.EVICTED.inc(moved)
        return moved
