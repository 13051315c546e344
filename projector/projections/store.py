"""Redis adapter of the projector: the atomic apply script, generations and watermarks.

The module is long because every projections script has its one adapter here, behind one class (and
the apply its argument builder)."""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.exceptions
from redis.asyncio.cluster import ClusterPipeline

from contract.buckets import (
    QUARTERS_PER_HOUR,
    day_components,
    day_tokens,
    parse_phases,
    phases_text,
    quarter_token,
    split_hours,
)
from contract.cells import NONE, Cell, CellLayout
from contract.hours import hour_token, parse_hour_token
from contract.keys import FIRST_GENERATION, Keys
from contract.schema import CellState, HourState, Kind
from deploy.projections_client import ProjectionsClient
from deploy.settings import Settings
from projector import metrics
from projector.fold.deltas import CellDelta, Deltas, Keyed
from projector.projections.scripts import source

log = logging.getLogger("projector")

RESTORE_CHUNK = 50
"""Cells (hours, quarter-hours, day rollups) per restore call: about 600 KB of HyperLogLogs at most."""
EVICT_CHUNK = 250
"""Hours per eviction call: each is a DEL of 10 keys (the hour, its quarter-hours) and an HSET, so a call
stays around a millisecond."""


class RestoreRefused(RuntimeError):
    """Another projector, a replay or a wipe got in the way; start over from Redis."""


class SwapOutcome(enum.IntEnum):
    SWAPPED = 1
    FENCED = 0
    GENERATION_MOVED = -1


class DayOutcome(enum.IntEnum):
    REBUILT = 1
    FENCED = 0
    GENERATION_MOVED = -1
    COLD = 2


@dataclass(frozen=True, slots=True)
class DayResult:
    outcome: DayOutcome
    cold: tuple[tuple[str, int], ...] = ()
    """With COLD: the hours (token, snapshot entry watermark) holding components, to thaw first."""


class Outcome(enum.IntEnum):
    APPLIED = 0
    WATERMARK_MOVED = 1
    GENERATION_MOVED = 2
    FENCED = 3
    COLD = 4


@dataclass(frozen=True, slots=True)
class ApplyResult:
    outcome: Outcome
    watermark: int
    cold: tuple[tuple[str, int], ...] = ()
    """With COLD: the hours (token, snapshot entry watermark) to thaw before applying again."""
    overflowed: tuple[tuple[str, int], ...] = ()
    """With APPLIED: ("<hour token> <dimension>", how many new values of it went to (other))."""


@dataclass(frozen=True, slots=True)
class Thawed:
    """A cold hour as its snapshot entry holds it, to be put back into Redis."""

    hour: int
    at: int
    state: HourState


class ProjectionStore:
    """Applies deltas for one partition at a time; every write goes through apply.lua."""

    def __init__(
        self,
        redis: ProjectionsClient,
        keys: Keys,
        dedup_window_s: float = 600.0,
        wait: tuple[int, int] = (0, 100),
        *,
        partitions: int,
        max_values: int = 10_000,
    ) -> None:
        self._redis = redis
        self.keys = keys
        self.cells = CellLayout(keys)
        self.partitions = partitions
        self.window_ms = int(dedup_window_s * 1000)
        self.max_values = max_values
        self._overflow_told: set[str] = set()
        self.wait_replicas, self.wait_timeout_ms = wait
        self._apply = redis.register_script(source("apply"))
        self._swap = redis.register_script(source("swap_hour"))
        self._lock = redis.register_script(source("lock"))
        self._restore = redis.register_script(source("restore"))
        self._evict = redis.register_script(source("evict"))
        self._thaw = redis.register_script(source("thaw"))
        self._rebuild_day = redis.register_script(source("rebuild_day"))
        self._phases: dict[tuple[str, int], tuple[int, ...]] = {}

    @classmethod
    def from_settings(cls, redis: ProjectionsClient, settings: Settings) -> ProjectionStore:
        wait = (settings.redis_wait_replicas, settings.redis_wait_timeout_ms)
        keys = Keys(settings.key_prefix)
        return cls(
            redis,
            keys,
            settings.dedup_window_s,
            wait,
            partitions=settings.partitions,
            max_values=settings.dimension_max_values,
        )

    async def current_generation(self, partition: int) -> int:
        """The partition's live generation, recording the first one when its pointer is missing (Redis
        is new, was wiped, that shard lost its data, or Redis holds the layout before hash tags): the
        partition is then restored from its snapshots and the log, as after a wipe."""
        await self._redis.set(self.keys.generation(partition), FIRST_GENERATION, nx=True)
        gen = self.keys.live_generation(await self._redis.get(self.keys.generation(partition)))
        # The counter must stay above every generation in use, also after a wipe.
        await self._redis.eval(
            "if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then "
            "redis.call('SET', KEYS[1], ARGV[1]) end",
            1,
            self.keys.generation_counter,
            gen,
        )
        return gen

    async def live_generation(self, partition: int) -> int | None:
        """The partition's generation pointer as it is: None when Redis lost it (a wipe)."""
        raw = await self._redis.get(self.keys.generation(partition))
        return None if raw is None else self.keys.live_generation(raw)

    async def watermark(self, gen: int, partition: int) -> int:
        raw = await self._redis.get(self.keys.watermark(gen, partition))
        return int(raw) if raw is not None else 0

    async def apply(
        self,
        gen: int | str,
        partition: int,
        expected: int,
        deltas: Deltas,
        *,
        epoch: str = "",
        live: bool = True,
        phases: Sequence[int] | None = None,
    ) -> ApplyResult:
        """Every event into its hour, its quarter-hour and the day rollup of each of the generation's
        `phases` (default: those recorded for `gen`, see `phases`), with the watermark, atomically."""
        if phases is None:
            phases = await self.phases(gen, partition)
        cells, axis_tokens, own = apply_payload(gen, partition, tuple(phases), deltas, self.max_values)
        keys, args = self.cells.call(
            gen,
            partition,
            check=gen if live else "",
            epoch=epoch,
            watermark=expected,
            named=[
                self.keys.dedup(gen, partition),
                self.keys.dirty(gen, partition),
                self.keys.cold(gen, partition),
                self.keys.scratch(partition),
                *(self.cells.axes_at(gen, partition, token) for token in axis_tokens),
            ],
            cells=cells,
        )
        args += [deltas.last_seq, self.window_ms, deltas.last_ms, *own]
        if live and self.wait_replicas > 0:
            status, watermark, _, *cold = await self._apply_and_wait(keys, args)
        else:
            status, watermark, _, *cold = await self._apply(keys=keys, args=args)
        pairs = tuple((_text(cold[i]), int(cold[i + 1])) for i in range(0, len(cold), 2))
        if int(status) == Outcome.APPLIED:
            if pairs:
                self._tell_overflow(partition, pairs)
            return ApplyResult(Outcome.APPLIED, int(watermark), overflowed=pairs)
        return ApplyResult(Outcome(int(status)), int(watermark), pairs)

    def _tell_overflow(self, partition: int, overflowed: tuple[tuple[str, int], ...]) -> None:
        """One WARNING per hour and dimension (per process) when new values start counting as (other)."""
        for where, values in overflowed:
            token, _, dimension = where.partition(" ")
            if len(token) != len(hour_token(0)):
                continue  # a split hour's quarter-hour: its hour tells
            metrics.DIMENSION_OVERFLOW.labels(dimension).inc(values)
            if where in self._overflow_told:
                continue
            if len(self._overflow_told) > 10_000:
                self._overflow_told.clear()
            self._overflow_told.add(where)
            log.warning(
                "hour %s, partition %d: %s has its %d values (ANALYTICS_DIMENSION_MAX_VALUES); new ones "
                "count as (other), every total unchanged",
                token,
                partition,
                dimension,
                self.max_values,
            )

    async def record_phases(
        self, gen: int | str, partition: int, phases: Sequence[int], *, live: bool = True
    ) -> tuple[int, ...]:
        """Record the day rollups (phases, contract.buckets) a generation keeps, once, before its first
        apply: the live generation keeps what is stored when something is (SET NX; returns what rules),
        a generation being built takes `phases` (SET). A live one that keeps others says so."""
        key = self.keys.phases(gen, partition)
        if live:
            await self._redis.set(key, phases_text(phases), nx=True)
            stored = parse_phases(await self._redis.get(key))
            if stored != tuple(sorted(set(phases))):
                log.warning(
                    "p%d: ANALYTICS_DAY_ZONES asks for day rollups starting at minutes %s of the UTC day, "
                    "but generation %s keeps %s; run ./just replay to build one with them",
                    *(partition, phases_text(phases), gen, phases_text(stored) or "none"),
                )
        else:
            await self._redis.set(key, phases_text(phases))
            stored = tuple(sorted(set(phases)))
        self._phases[(str(gen), partition)] = stored
        return stored

    async def phases(self, gen: int | str, partition: int) -> tuple[int, ...]:
        """The generation's phases as recorded (cached: they never change); () when none are: a
        generation from before day rollups, or a scratch one (a single-hour replay's)."""
        found = self._phases.get((str(gen), partition))
        if found is None:
            found = parse_phases(await self._redis.get(self.keys.phases(gen, partition)))
            self._phases[(str(gen), partition)] = found
        return found

    async def _apply_and_wait(self, keys: list[str], args: list[str | int]) -> list[Any]:
        """The apply, then WAIT on the same connection (WAIT covers that connection's own writes
        only), pipelined: one round trip, which WAIT holds until the replicas acknowledged the apply
        or the timeout passed."""
        for _ in range(2):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.execute_command("EVALSHA", self._apply.sha, len(keys), *keys, *args)
                pipe.execute_command(
                    "WAIT", self.wait_replicas, self.wait_timeout_ms, **_node_of(pipe, keys[2])
                )
                try:
                    reply, acked = await pipe.execute()
                except redis.exceptions.NoScriptError:  # a new or promoted server: nothing ran
                    await self._redis.script_load(self._apply.script)
                    continue
            if int(acked) < self.wait_replicas:
                metrics.WAIT_SHORT.inc()
            return list(reply)
        raise RuntimeError("the apply script vanished from Redis twice in a row")

    async def evict(
        self, gen: int, partition: int, epoch: str, watermark: int, hours: list[tuple[int, int]]
    ) -> int:
        """Move snapshotted, unchanged hours (hour, snapshot entry watermark) out of Redis; returns how
        many moved, or -1 when the generation, fence or watermark moved meanwhile."""
        moved = 0
        for start in range(0, len(hours), EVICT_CHUNK):
            cells: list[Cell] = []
            own: list[str | int] = []
            for hour, at in hours[start : start + EVICT_CHUNK]:
                cells += self.cells.hour_cells(gen, partition, hour)
                own += [hour_token(hour), at, 1 + QUARTERS_PER_HOUR]
            keys, args = self.cells.call(
                gen,
                partition,
                check=gen,
                epoch=epoch,
                watermark=watermark,
                named=[self.keys.dirty(gen, partition), self.keys.cold(gen, partition)],
                cells=cells,
            )
            args += own
            done = int(await self._evict(keys=keys, args=args))
            if done < 0:
                return -1
            moved += done
        return moved

    async def thaw(
        self,
        gen: int,
        partition: int,
        epoch: str,
        watermark: int,
        hours: list[Thawed],
        *,
        live: bool = True,
        mark: bool = False,
    ) -> bool:
        """Put cold hours back into Redis as their snapshot entries hold them; False when refused.
        `mark`: also mark them changed, so the next snapshot takes them again and the hot window moves
        them out again (an apply marks the hours it writes; a day rebuild only reads them)."""
        cells: list[Cell] = []
        own: list[bytes | str | int] = ["mark" if mark else ""]
        for item in hours:
            cells += self.cells.hour_cells(gen, partition, item.hour)
            own += [hour_token(item.hour), item.at, 1 + QUARTERS_PER_HOUR, *_cells(item.state)]
        keys, header = self.cells.call(
            gen,
            partition,
            check=gen if live else "",
            epoch=epoch,
            watermark=watermark,
            named=[self.keys.cold(gen, partition), self.keys.dirty(gen, partition)],
            cells=cells,
        )
        args: list[bytes | str | int] = [*header, *own]
        return int(await self._thaw(keys=keys, args=args)) >= 0

    async def restore(
        self,
        gen: int,
        partition: int,
        epoch: str,
        watermark: int,
        hours: list[tuple[int, HourState]],
        dedup: list[tuple[str, int]],
        *,
        live: bool = True,
        cold: Sequence[tuple[int, int]] = (),
        days: Sequence[tuple[str, HourState]] = (),
    ) -> None:
        """Write a snapshot into `gen`, which must have no watermark for the partition; the watermark is
        set last, so a restore cut short is simply done again. Raises RestoreRefused otherwise.
        `live=False` writes into a generation being built (by a replay), which is not live yet.
        `hours` go back with their quarter-hours, `days` (day rollup token, entry) as they are;
        `cold` hours (hour, snapshot entry watermark) stay in the store and are only named in Redis."""
        named = [self.keys.dedup(gen, partition), self.keys.cold(gen, partition)]
        check = gen if live else ""
        refused = f"p{partition}: restore refused (fence, generation or watermark moved)"

        async def write(cells: Sequence[Cell], own: Sequence[bytes | str | int]) -> None:
            keys, header = self.cells.call(gen, partition, check=check, epoch=epoch, named=named, cells=cells)
            if not await self._restore(keys=keys, args=[*header, *own]):
                raise RestoreRefused(refused)

        entries = [(self.cells.hour_cells(gen, partition, hour), _cells(state)) for hour, state in hours]
        for token, state in days:
            entries.append(
                ((Cell(gen, partition, token),), [state.hll or b"", state.clicks, state.impressions])
            )
        step = RESTORE_CHUNK // (1 + QUARTERS_PER_HOUR)
        for start in range(0, len(entries), step):
            cells: list[Cell] = []
            own: list[bytes | str | int] = ["cells", watermark]
            for entry_cells, values in entries[start : start + step]:
                cells += entry_cells
                own += [entry_cells[0].token, len(entry_cells), *values]
            await write(cells, own)
        for start in range(0, len(cold), EVICT_CHUNK):
            cells = []
            own = ["cold", watermark]
            for hour, at in cold[start : start + EVICT_CHUNK]:
                cells += self.cells.hour_cells(gen, partition, hour)
                own += [hour_token(hour), at, 1 + QUARTERS_PER_HOUR]
            await write(cells, own)
        commit: list[bytes | str | int] = ["commit", watermark]
        for member, at in dedup:
            commit += [at, member]
        await write((), commit)

    async def cold_hours(self, gen: int, partition: int) -> dict[int, int]:
        """The partition's cold hours: hour -> the watermark of the snapshot entry holding it."""
        raw = await self._redis.hgetall(self.keys.cold(gen, partition))
        return {parse_hour_token(_text(t)): int(at) for t, at in raw.items()}

    async def report_trouble(self, partition: int, why: str, ttl_s: float) -> None:
        """Tell `/readyz` why the partition is not applying; it lapses unless restated."""
        await self._redis.set(self.keys.trouble(partition), why, px=int(ttl_s * 1000))

    async def record_gap(self, gen: int, partition: int, why: str) -> None:
        """Kept for the generation's life (the first report wins): only a replay clears it."""
        await self._redis.set(self.keys.gap(gen, partition), why, nx=True)

    async def eviction_policy(self) -> str | None:
        """Redis's maxmemory-policy, or None when this user may not read the configuration."""
        try:
            found = await self._redis.config_get("maxmemory-policy")
        except redis.exceptions.ResponseError:
            return None
        for name, value in dict(found).items():
            if name in ("maxmemory-policy", b"maxmemory-policy"):
                return value.decode() if isinstance(value, bytes) else str(value)
        return None

    async def clear_trouble(self, partition: int) -> None:
        await self._redis.delete(self.keys.trouble(partition))

    async def swap_hour(
        self,
        gen: int | Mapping[int, int],
        rebuilt: int,
        hour: int,
        epochs: dict[int, str],
        watermarks: dict[int, int],
    ) -> SwapOutcome:
        """Put a rebuilt hour with its quarter-hours in place of the live one, partition by partition
        (each swap is atomic on its own, not across partitions): if `gen` (per partition, or one for
        all) is still live and the partition's fence is still ours. All are checked first, so a refusal
        usually changes nothing. The hour is in Redis afterwards, marked for the next snapshot; the day
        rollups overlapping it are the caller's to rebuild (rebuild_day)."""
        gens = {p: gen if isinstance(gen, int) else gen[p] for p in epochs}
        async with self._redis.pipeline(transaction=False) as pipe:
            for p in epochs:
                pipe.get(self.keys.generation(p))
                pipe.get(self.keys.fence(p))
            found = await pipe.execute()
        for i, p in enumerate(epochs):
            if found[2 * i] is None or int(found[2 * i]) != gens[p]:
                return SwapOutcome.GENERATION_MOVED
            if _text(found[2 * i + 1] or "") != epochs[p]:
                return SwapOutcome.FENCED
        for p, epoch in epochs.items():
            g = gens[p]
            keys, args = self.cells.call(
                g,
                p,
                check=g,
                epoch=epoch,
                named=[self.keys.cold(g, p), self.keys.dirty(g, p)],
                cells=[*self.cells.hour_cells(g, p, hour), *self.cells.hour_cells(rebuilt, p, hour)],
            )
            args += [hour_token(hour), watermarks[p]]
            outcome = SwapOutcome(int(await self._swap(keys=keys, args=args)))
            if outcome is not SwapOutcome.SWAPPED:
                return outcome
        return SwapOutcome.SWAPPED

    async def rebuild_day(
        self, gen: int, partition: int, day_token: str, epoch: str = "", *, live: bool = True
    ) -> DayResult:
        """Rebuild a day rollup from its hours and quarter-hours in one atomic step (DEL, PFMERGE, sums)
        and mark it for the next snapshot; refused when `gen` is no longer live (unless `live=False`: a
        generation being built) or the fence is not `epoch` ("" = unfenced). With COLD nothing was
        written: hot_window.rebuild_day_thawing thaws those hours and calls again."""
        components = day_components(day_token)
        keys, args = self.cells.call(
            gen,
            partition,
            check=gen if live else "",
            epoch=epoch,
            named=[self.keys.dirty(gen, partition), self.keys.cold(gen, partition)],
            cells=[Cell(gen, partition, token) for token in (day_token, *components)],
        )
        args.append(day_token)
        # Per component, the hour holding it (an hour token is its own first 10 characters).
        args += [token[:10] for token in components]
        status, *cold = await self._rebuild_day(keys=keys, args=args)
        pairs = tuple((_text(cold[i]), int(cold[i + 1])) for i in range(0, len(cold), 2))
        return DayResult(DayOutcome(int(status)), pairs)

    async def last_generation_handed_out(self) -> int:
        return int(await self._redis.get(self.keys.generation_counter) or 0)

    async def lock(self, owner: str, ttl_s: float) -> bool:
        return bool(
            await self._lock(keys=[self.keys.replay_lock], args=["acquire", owner, int(ttl_s * 1000)])
        )

    async def renew_lock(self, owner: str, ttl_s: float) -> bool:
        return bool(await self._lock(keys=[self.keys.replay_lock], args=["renew", owner, int(ttl_s * 1000)]))

    async def unlock(self, owner: str) -> None:
        await self._lock(keys=[self.keys.replay_lock], args=["release", owner, 0])

    async def lock_holder(self) -> str | None:
        raw = await self._redis.get(self.keys.replay_lock)
        return raw.decode() if isinstance(raw, bytes) else raw

    async def drop_orphans(self, upto: int | None = None) -> int:
        """Remove, per partition, every generation but the partition's live one that a replay handed out
        (up to `upto`, default all so far): what a killed replay left behind. Returns the keys removed."""
        if upto is None:
            upto = await self.last_generation_handed_out()
        dropped = 0
        for p in range(self.partitions):
            live = self.keys.live_generation(await self._redis.get(self.keys.generation(p)))
            head = self.keys.gen_prefix(p)
            async for raw in self._redis.scan_iter(match=f"{head}*", count=1000):
                key = _text(raw)
                token = key[len(head) :].partition(":")[0]
                if token.isdigit() and int(token) != live and int(token) <= upto:
                    dropped += await self._redis.unlink(key)
        return dropped

    async def new_generation(self) -> int:
        return int(await self._redis.incr(self.keys.generation_counter))

    async def switch_generation(self, gen: int) -> dict[int, int | None]:
        """Make `gen` every partition's live generation (the caller holds every lease, so no partition
        moves meanwhile); returns the one each replaced. The pointers are set one by one: a read in
        between sees some partitions in the new generation, each exact at its watermark and never behind
        the old one, so no count goes backwards."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for p in range(self.partitions):
                pipe.getset(self.keys.generation(p), gen)
            old = await pipe.execute()
        return {p: None if raw is None else int(raw) for p, raw in enumerate(old)}

    async def drop_generation(self, gen: int | str, partitions: Sequence[int] | None = None) -> int:
        """Remove a generation's keys (of every partition, or of those named)."""
        dropped = 0
        for p in range(self.partitions) if partitions is None else partitions:
            async for key in self._redis.scan_iter(match=self.keys.gen_pattern(gen, p), count=1000):
                dropped += await self._redis.unlink(key)
        return dropped


def _cells(state: HourState) -> list[bytes | int]:
    """HLL, clicks, impressions of an hour entry, then of each of its quarter-hours (an entry from before
    quarter-hours: empty ones)."""
    quarters = state.quarters or (CellState(None, 0, 0),) * QUARTERS_PER_HOUR
    cells: tuple[HourState | CellState, ...] = (state, *quarters)
    return [v for c in cells for v in (c.hll or b"", c.clicks, c.impressions)]


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _node_of(pipe: Any, key: str) -> dict[str, Any]:
    """On a cluster, WAIT goes to the node owning `key`'s slot (redis-py sends the keyless WAIT to its
    default node), where the pipeline shares the apply's connection; one node needs nothing."""
    if isinstance(pipe, ClusterPipeline):
        return {"target_nodes": pipe.cluster_client.get_node_from_key(key)}
    return {}


_KIND = {Kind.CLICK: "c", Kind.IMPRESSION: "i"}


def apply_payload(
    gen: int | str, partition: int, phases: tuple[int, ...], deltas: Deltas, max_values: int = 10_000
) -> tuple[list[Cell], list[str], list[str | int]]:
    """The cells one apply touches, the tokens (hours, and quarter-hours of split hours) whose axes
    hash it names (after the script's four named keys), and the script's own arguments after the
    header's watermark, window and newest time: one token per cell, the group count and per group its
    cells, clicks, impressions and users, then the bound and each token's axes, then the keyed events
    naming their group and axes (see apply.lua and axes.lua)."""
    cells = _Cells(gen, partition, phases)
    groups: list[str | int] = []
    quarter_groups: dict[tuple[int, int], int] = {}
    for hour, delta in deltas.hours.items():
        for quarter, cell in enumerate(delta.quarters):
            if cell.clicks or cell.impressions:
                quarter_groups[(hour, quarter)] = cells.group(hour, quarter)
                groups += [
                    cells.group_cells(hour, quarter),
                    cell.clicks,
                    cell.impressions,
                    "\n".join(cell.users),
                ]
    split = split_hours(phases)
    buckets: dict[str, dict[str, CellDelta]] = {}
    taken: dict[str, str] = {}
    """A plain hour's (or quarter's) NONE axis is its quarter-hours' unkeyed events: named by group,
    not sent twice."""
    for hour, delta in deltas.hours.items():
        quarters = range(QUARTERS_PER_HOUR)
        if delta.axes:
            buckets[hour_token(hour)] = delta.axes
            if delta.plain:
                taken[hour_token(hour)] = _joined(quarter_groups.get((hour, q)) for q in quarters)
        if delta.quarter_axes and hour % 24 in split:
            for q, axes_q in enumerate(delta.quarter_axes):
                buckets[quarter_token(hour, q)] = axes_q
                if delta.plain:
                    taken[quarter_token(hour, q)] = _joined([quarter_groups.get((hour, q))])
    for k in deltas.keyed:
        for token in _keyed_tokens(k, buckets):
            if any(axis not in buckets.get(token, ()) for axis in k.axes):
                # A single-hour rebuild's deltas hold its hour alone; other hours' keyed events lend keys.
                known = buckets[token] = dict(buckets.get(token, {}))
                for axis in k.axes:
                    known.setdefault(axis, CellDelta())
    entries: dict[tuple[str, str], int] = {}
    axes: list[str | int] = [max_values, len(buckets)]
    for token, cells_of in buckets.items():
        parts = []
        for axis, cell in cells_of.items():
            entries[(token, axis)] = len(entries) + 1
            users, also = "\n".join(cell.users), taken.get(token, "") if axis == NONE else ""
            parts.append(f"{axis}\x1f{cell.clicks}\x1f{cell.impressions}\x1f{users}\x1f{also}\x1e")
        axes += [token, "".join(parts)]
    keyed = []
    for k in deltas.keyed:
        group = cells.keyed_group(k, groups)
        named = ",".join(str(entries[(t, axis)]) for t in _keyed_tokens(k, buckets) for axis in k.axes)
        keyed.append(f"{k.stream_ms}\x1f{group}\x1f{named}\x1f{_KIND[k.kind]}\x1f{k.user}\x1f{k.key}\x1e")
    return (
        cells.cells,
        list(buckets),
        [*(c.token for c in cells.cells), len(groups) // 4, *groups, *axes, "".join(keyed)],
    )


def _keyed_tokens(k: Keyed, buckets: dict[str, dict[str, CellDelta]]) -> list[str]:
    """The tokens whose axes a keyed event names: its hour's, and its quarter's in a split hour."""
    if not k.axes:
        return []
    quarter = quarter_token(k.hour, k.quarter)
    return [hour_token(k.hour), quarter] if quarter in buckets else [hour_token(k.hour)]


def _joined(groups: Iterable[int | None]) -> str:
    return ",".join(str(g) for g in groups if g is not None)


class _Cells:
    """The cells one apply touches, numbered from 1 in the order first named, and the groups that events
    go to: one per quarter-hour (the quarter, its hour and its day rollups)."""

    def __init__(self, gen: int | str, partition: int, phases: tuple[int, ...]) -> None:
        self._gen, self._partition, self._phases = gen, partition, phases
        self.cells: list[Cell] = []
        self._index: dict[str, int] = {}
        self._groups: dict[tuple[int, int], int] = {}

    def _cell(self, token: str) -> int:
        found = self._index.get(token)
        if found is None:
            found = self._index[token] = len(self.cells) + 1
            self.cells.append(Cell(self._gen, self._partition, token))
        return found

    def group(self, hour: int, quarter: int) -> int:
        """The number of the quarter-hour's group (the next one if it has none yet)."""
        return self._groups.setdefault((hour, quarter), len(self._groups) + 1)

    def group_cells(self, hour: int, quarter: int) -> str:
        """The cell numbers of the quarter-hour's group, joined for the script."""
        tokens = [quarter_token(hour, quarter), hour_token(hour), *day_tokens(hour, quarter, self._phases)]
        return ",".join(str(self._cell(token)) for token in tokens)

    def keyed_group(self, k: Keyed, groups: list[str | int]) -> int:
        """The group a keyed event counts in (its quarter-hour's); an empty one is added if it has none."""
        if (k.hour, k.quarter) not in self._groups:
            groups += [self.group_cells(k.hour, k.quarter), 0, 0, ""]
        return self.group(k.hour, k.quarter)
