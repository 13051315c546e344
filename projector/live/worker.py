"""One partition, live: fetch batches, screen, fold, apply atomically with the watermark, then ack."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable

import nats.errors
import nats.js.errors
import redis.exceptions
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from contract import schema
from contract.hours import hour_of, system_now_ms
from contract.stream import consumer_name
from deploy.settings import Settings
from projector import metrics
from projector.fold.deltas import Deltas
from projector.fold.digest import Decoder
from projector.live.log_trouble import LogBehind, RewindWatch, log_rewound, retention_gap
from projector.log.change_notices import announce
from projector.log.consumer_position import partition_last_seq, position_consumer
from projector.log.dead_letters import dead_letter
from projector.log.fetched import Fetched, Pulled, digest_fetched
from projector.log.pull import Puller
from projector.projections.hot_window import Evictor, apply_thawing, first_hot_hour
from projector.projections.snapshots import Snapshots
from projector.projections.store import ApplyResult, Outcome, ProjectionStore, RestoreRefused

log = logging.getLogger("projector")

TRANSIENT = (
    OSError,
    asyncio.TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    nats.errors.Error,
    LogBehind,
)


STALL_RETRY_S = 5.0
"""How often a stopped partition tries again (and says so again)."""
TROUBLE_TTL_S = 15.0
"""How long a reported problem stays on `/readyz` unless restated."""


class Stopped(enum.Enum):
    RESYNC = "resync"
    FENCED = "fenced"
    STOPPED = "stopped"


class PartitionWorker:
    """Applies one partition under a lease epoch. Its position lives in Redis, so it can always
    start over from there; it ends when stopped or when the fence says another projector took over."""

    def __init__(
        self,
        settings: Settings,
        nc: NATS,
        store: ProjectionStore,
        partition: int,
        epoch: str = "",
        decoder: Decoder = schema.decode,
        snapshots: Snapshots | None = None,
        clock: Callable[[], int] = system_now_ms,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.evictor: Evictor | None = None
        self.snapshots = snapshots
        self.next_snapshot = time.monotonic() + settings.snapshot_interval_s
        self.nc = nc
        self.js = nc.jetstream()
        self.store = store
        self.partition = partition
        self.epoch = epoch
        self.rewinds = RewindWatch()
        self.decoder = decoder
        self.gen = 0
        self.watermark = 0
        self.troubled = False
        self.errors = 0
        self.rollback_counted = False

    async def run(self, stop: asyncio.Event) -> Stopped:
        backoff = 0.2
        while not stop.is_set():
            try:
                outcome = await self._follow(stop)
                if outcome is Stopped.FENCED:
                    return outcome
                backoff = 0.2
                continue
            except NotFoundError:
                log.warning("p%d: stream %s not found yet", self.partition, self.settings.stream_name)
            except TRANSIENT as exc:
                log.warning("p%d: %s %s; retrying", self.partition, type(exc).__name__, exc)
            except redis.exceptions.ResponseError as exc:
                if not out_of_memory(exc):
                    await self._failed(exc)
                else:
                    metrics.REDIS_OOM.inc()
                    log.warning(
                        "p%d: Redis is out of memory (%s); retrying in %.1fs", self.partition, exc, backoff
                    )
                    await self._report(f"cannot apply: Redis is out of memory ({exc})")
            except Exception as exc:
                await self._failed(exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, 5.0)
        return Stopped.STOPPED

    async def _failed(self, exc: Exception) -> None:
        """Anything unexpected: loud (traceback, metric, `/readyz`), then retried with backoff."""
        self.errors += 1
        metrics.ERRORS.labels(str(self.partition)).inc()
        log.exception("p%d: worker failed (%d errors so far); restarting it", self.partition, self.errors)
        await self._report(f"is failing: {type(exc).__name__}: {exc} ({self.errors} errors)")

    async def _report(self, why: str) -> None:
        self.troubled = True
        with contextlib.suppress(Exception):
            await self.store.report_trouble(self.partition, why, TROUBLE_TTL_S)

    async def _recovered(self) -> None:
        if self.troubled:
            await self.store.clear_trouble(self.partition)
            metrics.STALLED_AT.labels(str(self.partition)).set(0)
            self.troubled = False
            self.errors = 0

    async def _stall(self, pulled: Pulled, exc: schema.UnknownVersion, stop: asyncio.Event) -> None:
        """A batch this projector cannot read is never skipped: stop in front of it and say so."""
        seq = pulled.meta.stream_seq
        metrics.STALLED_AT.labels(str(self.partition)).set(seq)
        log.error(
            "p%d: stopped at stream seq %d on %s: %s. It will not be skipped: run a projector that knows "
            "this version (upgrade projectors before ingest); retrying in %.0fs",
            self.partition,
            seq,
            pulled.subject,
            exc,
            STALL_RETRY_S,
        )
        await self._report(f"stopped at stream seq {seq}: {exc}")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), STALL_RETRY_S)

    async def _follow(self, stop: asyncio.Event) -> Stopped:
        """Position from Redis, then apply batches until stopped or until Redis disagrees."""
        refused = await self._position()
        if refused is not None:
            return refused
        puller = Puller(
            self.nc, self.settings.stream_name, consumer_name(self.partition), self.settings.pull_reader
        )
        delivered = 0  # the consumer is new, so its first delivery is number 1
        try:
            while not stop.is_set():
                try:
                    fetched = await puller.fetch(
                        self.settings.projector_batch, self.settings.projector_idle_s
                    )
                except TimeoutError:
                    if not await self._position_still_true() or not await self._caught_up():
                        return Stopped.RESYNC
                    await self._maybe_snapshot()
                    continue
                # The watermark is only sound over a gap-free run of first deliveries: a message
                # delivered to an abandoned pull request, or redelivered, ends the run, and the
                # consumer is then recreated at the watermark instead.
                metrics.CONSUMER_LAG.labels(str(self.partition)).set(fetched.pending)
                msgs = fetched.head(_contiguous(fetched, delivered))
                delivered += len(msgs)
                for run in msgs.runs():  # a bounded apply each
                    if (outcome := await self._take(run, puller, stop)) is not None:
                        return outcome
                if len(msgs) < len(fetched):
                    log.info("p%d: delivery gap after consumer seq %d; resyncing", self.partition, delivered)
                    return Stopped.RESYNC
                if fetched.pending == 0 and self.settings.projector_coalesce_ms > 0:
                    # Caught up: let a few milliseconds of events gather so each apply carries more.
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.settings.projector_coalesce_ms / 1000)
            return Stopped.STOPPED
        finally:
            with contextlib.suppress(Exception):
                await puller.close()

    async def _position(self) -> Stopped | None:
        """Generation and watermark from Redis (or the last snapshot), then the consumer recreated
        after the watermark. Stopped.RESYNC when a restore was refused."""
        gen = await self.store.current_generation(self.partition)
        await self.store.record_phases(gen, self.partition, self.settings.day_phases)  # before any apply
        found = await self.store.watermark(gen, self.partition)
        if gen == self.gen and found < self.watermark:
            self._rolled_back(found)  # while this worker retried (a failover): its applies were lost
        self.gen, self.watermark = gen, found
        if self.watermark == 0 and self.snapshots is not None:
            # Redis lost the partition (a wipe, a new Redis): start from the last snapshot, not the log.
            try:
                self.watermark = await self.snapshots.restore(
                    self.gen, self.partition, self.epoch, self.store, hot_from=self._hot_from()
                )
            except RestoreRefused as exc:
                log.warning("%s; resyncing", exc)
                return Stopped.RESYNC
            if self.watermark:
                metrics.RESTORES.inc()
        if self.snapshots is not None and (self.evictor is None or self.evictor.gen != self.gen):
            self.evictor = Evictor(self.store, self.snapshots, self.gen, self.partition)
        state = (await self.js.stream_info(self.settings.stream_name)).state
        if self.rewinds.lost(self.partition, self.watermark, state.last_seq):
            phases = self.settings.day_phases
            await log_rewound(self.store, self.gen, self.partition, self.watermark, state.last_seq, phases)
            self.watermark = 0
        elif self.watermark + 1 < state.first_seq:
            await retention_gap(self.store, self.gen, self.partition, self.watermark, state.first_seq)
        batch, counted = self.settings.projector_batch, self.rollback_counted
        await position_consumer(self.js, self.settings, self.partition, self.watermark, batch, counted)
        self.rollback_counted = False
        following = (self.partition, self.watermark + 1, self.gen, self.epoch or "-")
        log.info("p%d: following from stream seq %d (generation %d, epoch %s)", *following)
        return None

    async def _take(self, msgs: Fetched, puller: Puller, stop: asyncio.Event) -> Stopped | None:
        """Dead letters filed, deltas applied with the watermark, then acked; None to go on."""
        done = digest_fetched(msgs, self.settings, self.watermark, self.decoder)
        for i, why in done.rejected:
            if msgs.seqs[i] > self.watermark:
                await dead_letter(self.js, self.settings, self.partition, msgs.at(i), why)
        deltas = done.deltas
        if deltas:
            refused = await self._apply(deltas)
            if refused is not None:
                return refused
        if done.unknown is not None:
            if done.digested:
                await puller.ack(msgs.replies[done.digested - 1])
            await self._stall(msgs.at(done.digested), done.unknown, stop)
            return Stopped.RESYNC
        if deltas:
            await self._recovered()
        if msgs:
            await puller.ack(msgs.replies[-1])  # AckPolicy.ALL: acks every message up to this one
        await self._maybe_snapshot()
        return None

    async def _apply(self, deltas: Deltas) -> Stopped | None:
        """The deltas and the watermark, in one atomic step; then the change is announced."""
        started = time.perf_counter()
        result = await apply_thawing(
            self.store, self.snapshots, self.gen, self.partition, self.watermark, deltas, epoch=self.epoch
        )
        metrics.APPLY_SECONDS.observe(time.perf_counter() - started)
        if result.outcome is Outcome.FENCED:
            log.warning("p%d: fenced: another projector holds it now; letting go", self.partition)
            return Stopped.FENCED
        if result.outcome is not Outcome.APPLIED:
            if not self._went_back(result):
                log.warning(
                    "p%d: apply refused (%s; redis watermark %d, ours %d); resyncing",
                    self.partition,
                    result.outcome.name,
                    result.watermark,
                    self.watermark,
                )
            return Stopped.RESYNC
        self.watermark = result.watermark
        metrics.APPLIED_EVENTS.inc(deltas.events)
        metrics.count_late(deltas, hour_of(self.clock()))
        metrics.APPLIED_SEQ.labels(str(self.partition)).set(self.watermark)
        await announce(self.nc, self.settings, tuple(deltas.hours))
        return None

    async def _maybe_snapshot(self) -> None:
        """Between this worker's own applies, so nothing changes under the snapshot while it is read.
        A failed snapshot is retried at the next interval; applying goes on regardless."""
        if self.snapshots is None or self.settings.snapshot_interval_s <= 0:
            return
        if time.monotonic() < self.next_snapshot:
            return
        self.next_snapshot = time.monotonic() + self.settings.snapshot_interval_s
        try:
            written = await self.snapshots.write(self.gen, self.partition)
            hot_from = self._hot_from()
            moved = 0
            if self.evictor is not None and hot_from is not None:
                moved = await self.evictor.run(self.epoch, self.watermark, hot_from)
        except (*TRANSIENT, nats.js.errors.Error, redis.exceptions.ResponseError) as exc:
            log.warning(
                "p%d: snapshot failed (%s %s); retrying in %.0fs",
                self.partition,
                type(exc).__name__,
                exc,
                self.settings.snapshot_interval_s,
            )
            return
        if moved > 0:
            log.info("p%d: %d hours older than the hot window left Redis", self.partition, moved)
        if written is not None:
            metrics.SNAPSHOT_SEQ.labels(str(self.partition)).set(written.watermark)
            metrics.SNAPSHOT_TIME.labels(str(self.partition)).set(time.time())
            log.info(
                "p%d: snapshot at stream seq %d (%d hours changed)",
                self.partition,
                written.watermark,
                written.hours,
            )

    def _hot_from(self) -> int | None:
        return first_hot_hour(self.clock(), self.settings.hot_hours)

    async def _caught_up(self) -> bool:
        """Idle, with no message of this partition in the stream past the watermark: the watermark may
        move to the stream's last sequence (near the head of the log, where retention cannot overtake
        it). The stream is asked, never the shared consumer, which a projector that lost the partition
        may have just recreated, empty: trusting it skipped messages (docs/faults.md)."""
        last = (await self.js.stream_info(self.settings.stream_name)).state.last_seq
        if last < self.watermark:
            return False  # the log went back, or says so for a while: _position tells which
        if last == self.watermark:
            return True
        # Read after `last`: a message of this partition up to `last` would be this one or a later one.
        if (ours := await partition_last_seq(self.js, self.settings, self.partition)) > self.watermark:
            # Idle for a whole fetch, yet there is more of ours: the consumer is not delivering it.
            log.info("p%d: stream seq %d is not delivered; resyncing", self.partition, ours)
            return False
        result = await self.store.apply(
            self.gen, self.partition, self.watermark, Deltas(last_seq=last), epoch=self.epoch
        )
        if result.outcome is not Outcome.APPLIED:
            self._went_back(result)
            return False
        self.watermark = result.watermark
        return True

    def _went_back(self, result: ApplyResult) -> bool:
        """True (and said) when a refused apply found the watermark below ours: Redis lost applies."""
        if result.outcome is Outcome.WATERMARK_MOVED and result.watermark < self.watermark:
            self._rolled_back(result.watermark)
            return True
        return False

    def _rolled_back(self, found: int) -> None:
        """Redis went back in time (a promoted replica lacked the last applies): the watermark went back
        with the counts and dedup, so the resync that follows re-applies what came after it, once."""
        metrics.ROLLBACKS.labels(str(self.partition)).inc()
        self.evictor = None  # hours it moved out may be back in Redis: a new one asks about them all
        why = "a failover lost the last applies?"
        log.warning(
            "p%d: Redis went back in time: its watermark is %d, this projector had applied up to %d (%s); "
            "re-applying stream seqs %d..%d from the log",
            *(self.partition, found, self.watermark, why, found + 1, self.watermark),
        )
        self.watermark = found  # counted once: the resync that follows starts from here
        self.rollback_counted = True  # so its consumer, acked past `found`, is not counted again

    async def _position_still_true(self) -> bool:
        """Idle check: Redis may have been wiped, restored or switched to a new generation."""
        gen = await self.store.live_generation(self.partition)
        if gen != self.gen:
            log.warning("p%d: generation is now %s (was %d); resyncing", self.partition, gen, self.gen)
            return False
        watermark = await self.store.watermark(self.gen, self.partition)
        if watermark < self.watermark:
            self._rolled_back(watermark)
            return False
        if watermark != self.watermark:
            why = f"redis watermark is {watermark}, expected {self.watermark}"
            log.warning("p%d: %s; resyncing", self.partition, why)
            return False
        return True


def out_of_memory(exc: Exception) -> bool:
    return isinstance(exc, redis.exceptions.OutOfMemoryError) or str(exc).startswith("OOM")


def _contiguous(fetched: Fetched, delivered: int) -> int:
    """How many leading messages continue the consumer's delivery sequence without a gap."""
    for i, (consumer_seq, times) in enumerate(zip(fetched.consumer_seqs, fetched.delivered, strict=True)):
        if consumer_seq != delivered + i + 1 or times != 1:
            return i
    return len(fetched)
