"""One partition (or one hour of it) folded from the stream into a generation being built, starting
after its snapshot once compaction has purged the log's beginning: the work every kind of replay does."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from contract.buckets import split_hours
from contract.hours import hour_token, partition_filter, system_now_ms
from deploy.settings import Settings
from projector.fold.deltas import Deltas
from projector.fold.digest import digest
from projector.log.dead_letters import dead_letter
from projector.log.fetched import Fetched, digest_fetched
from projector.log.hour_log import Columns, cut, keyed_span
from projector.log.pull import Puller
from projector.projections.hot_window import apply_thawing, first_hot_hour
from projector.projections.snapshots import Snapshots
from projector.projections.store import Outcome, ProjectionStore
from projector.replay.reports import Built, ReplayRefused

log = logging.getLogger("replay")
T = TypeVar("T")

TAKEOVERS = 4
"""Fresh consumers that may take over a partition's read when one goes quiet with messages pending."""


class _Stalled(Exception):
    """The consumer delivered nothing for a while with messages pending (their count)."""


REPLAY_FETCH = 1000
"""Messages per fetch (and at most `FETCH_MAX_BYTES`): many small live-written messages per apply."""


async def fold_partitions(
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
    built = await all_or_none(
        [
            fold_partition(settings, nc, store, gen, p, filed[p], after=starts[p], snapshots=snapshots)
            for p in partitions
        ]
    )
    return dict(zip(partitions, built, strict=True))


async def all_or_none(folds: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Every result; or, when one raises, the others cancelled and ended first, then its exception.

    asyncio.gather leaves the others running: a refused replay then dropped its half-built generation
    while other partitions still applied to it, and their keys outlived the drop (seen in CI)."""
    tasks = [asyncio.ensure_future(fold) for fold in folds]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def fold_partition(
    settings: Settings,
    nc: NATS,
    store: ProjectionStore,
    gen: int,
    partition: int,
    dead_letter_above: int,
    *,
    after: int = 0,
    snapshots: Snapshots | None = None,
) -> Built:
    """Fold every message on the partition after stream seq `after` into `gen`'s keys, whose watermark
    for the partition is `after` to begin with.

    A whole-partition build ends with the watermark at the stream's last sequence as it was when the
    build began: everything of the partition up to there is applied, so no retention gap is seen later.
    """
    js = nc.jetstream()
    last = (await js.stream_info(settings.stream_name)).state.last_seq
    fold = _Fold(settings, js, store, gen, partition, dead_letter_above, after, snapshots)
    for takeover in range(TAKEOVERS + 1):
        consumer = await js.add_consumer(
            settings.stream_name,
            ConsumerConfig(
                filter_subject=partition_filter(settings.subject_prefix, partition),
                ack_policy=AckPolicy.NONE,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE if fold.through else DeliverPolicy.ALL,
                opt_start_seq=fold.through + 1 if fold.through else None,
                inactive_threshold=60.0,
            ),
        )
        puller = Puller(nc, settings.stream_name, consumer.name, settings.pull_reader)
        try:
            await fold.run(puller, consumer.name, consumer.num_pending or 0)
            break
        except _Stalled as stalled:
            if takeover == TAKEOVERS:
                raise ReplayRefused(f"p{partition}: replay stalled with {stalled} messages left") from None
            # A consumer can go quiet with messages pending (seen on a JetStream cluster in CI, as for
            # the audit's reads): a fresh one takes over from the next message, each read once.
            log.warning(
                "p%d: the replay's consumer went quiet with %s messages left; a fresh one takes over",
                partition,
                stalled,
            )
        finally:
            await puller.close()
            with contextlib.suppress(Exception):
                await js.delete_consumer(settings.stream_name, consumer.name)
    if last > fold.watermark:
        fold.watermark = await _apply(store, gen, partition, fold.watermark, Deltas(last_seq=last))
    log.info(
        "p%d: %d messages, %d events, up to stream seq %d",
        partition,
        fold.messages,
        fold.events,
        fold.watermark,
    )
    return Built(fold.messages, fold.events, fold.watermark)


async def fold_hour(
    settings: Settings,
    nc: NATS,
    store: ProjectionStore,
    gen: int,
    partition: int,
    hour: int,
    columns: Columns,
    *,
    after: int,
    upto: int,
) -> Built:
    """The hour's messages of one partition (`columns`, stream order) past stream seq `after` and up to
    `upto`, folded into `gen`, whose watermark for the partition is `after` to begin with, keys judged
    as live judged them: folded with the messages that may have refused its keyed events
    (`keyed_span`, the audit's recount folds the same). Those lend `gen`'s dedup set their keyed
    events; what they add to other hours' cells of `gen` is never swapped in."""
    seqs = columns[2]
    lo, hi = bisect.bisect_right(seqs, after), bisect.bisect_right(seqs, upto)
    mine = cut(columns, lo, hi)
    if not mine[2]:
        return Built(0, 0, after)
    span = await keyed_span(nc, settings, partition, hour, mine)
    watermark = after
    for start in range(0, len(span.columns[2]), REPLAY_FETCH):
        subjects, payloads, run, stamps = cut(span.columns, start, start + REPLAY_FETCH)
        done = digest(
            subjects,
            payloads,
            run,
            stamps,
            prefix=settings.subject_prefix,
            partitions=settings.partitions,
            after=watermark,
            dimensions=settings.dimension_names,
            pairs=settings.dimension_pair_names,
            split=split_hours(settings.day_phases),
        )
        if done.unknown is not None:
            raise ReplayRefused(
                f"p{partition}: stream seq {run[done.digested]}: {done.unknown}; upgrade this projector first"
            )
        # Nothing is dead-lettered: every message is at or below the live watermark, so live did that.
        deltas = done.deltas
        if deltas:
            deltas.hours = {h: d for h, d in deltas.hours.items() if h == hour}
            watermark = await _apply(store, gen, partition, watermark, deltas)
    lent = len(span.columns[2]) - len(mine[2])
    log.info("p%d: %d messages of the hour, %d lending keys", partition, len(mine[2]), lent)
    return Built(len(mine[2]), span.hour_digest.deltas.events, watermark)


class _Fold:
    """The fetch loop of `fold_partition`, and what it has built so far."""

    def __init__(
        self,
        settings: Settings,
        js: JetStreamContext,
        store: ProjectionStore,
        gen: int,
        partition: int,
        dead_letter_above: int,
        after: int,
        snapshots: Snapshots | None,
    ) -> None:
        self.settings, self.js, self.store, self.gen = settings, js, store, gen
        self.partition, self.dead_letter_above, self.snapshots = partition, dead_letter_above, snapshots
        self.watermark = self.through = after  # through: the last sequence delivered (a takeover's start)
        self.messages = self.events = 0

    async def run(self, puller: Puller, consumer: str, pending: int) -> None:
        stalls = 0
        while pending > 0:
            try:
                fetched = await puller.fetch(REPLAY_FETCH, 5.0)
            except TimeoutError:
                # Never take a quiet moment for the end: ask the server what is left.
                try:
                    info = await self.js.consumer_info(self.settings.stream_name, consumer)
                except NotFoundError:
                    raise _Stalled(pending) from None  # it went away (a cut-off server's consumers do)
                pending = info.num_pending or 0
                stalls += 1
                if pending and stalls > 5:
                    raise _Stalled(pending) from None
                continue
            stalls = 0
            for run in fetched.runs():
                await self._take(run)
            self.through = max(self.through, fetched.seqs[-1]) if fetched.seqs else self.through
            pending = fetched.pending

    async def _take(self, fetched: Fetched) -> None:
        done = digest_fetched(fetched, self.settings, after=self.watermark)
        if done.unknown is not None:
            raise ReplayRefused(
                f"p{self.partition}: stream seq {fetched.seqs[done.digested]}: {done.unknown}; "
                "upgrade this projector first"
            )
        for i, why in done.rejected:
            if fetched.seqs[i] > self.dead_letter_above:
                await dead_letter(self.js, self.settings, self.partition, fetched.at(i), why)
        deltas = done.deltas
        if deltas:
            self.watermark = await _apply(
                self.store, self.gen, self.partition, self.watermark, deltas, self.snapshots
            )
        self.messages += done.digested
        self.events += deltas.events


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


async def restore_if_compacted(
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
