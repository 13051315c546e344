"""The audit's two reads of an hour: what Redis (or, for a cold hour, its snapshot entry) serves for it
and its quarter-hours with each partition's watermark, in one consistent view; then the hour's messages
from the log, widened by those that lend their keys (`keyed_span`, which a single-hour replay folds
too). And the read of a day rollup with its components, in one consistent view."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contract import hll
from contract.buckets import (
    DAY_MS,
    MINUTE_MS,
    QUARTERS_PER_HOUR,
    day_components,
    day_tokens,
    owning_hour,
    parse_day_token,
    parse_phases,
    parse_quarter_token,
    quarter_token,
)
from contract.cells import COUNTERS, Cell, CellLayout
from contract.hours import hour_token, parse_subject, partition_filter
from contract.keys import Keys
from contract.schema import CellState, HourState
from deploy.projections_client import ProjectionsClient
from deploy.settings import Settings
from projector.audit.verdict import Counted, DayAudit, DayPart, check_day, first_keyed_ms
from projector.fold.deltas import Keyed
from projector.fold.digest import Digest, digest
from projector.log.pull import Puller
from projector.projections.snapshots import Snapshots

AUDIT_FETCH = 1000
EMPTY_CELL = CellState(None, 0, 0)


class Moved(RuntimeError):
    """The generation kept switching (replays) while the audit read an hour."""


@dataclass(frozen=True, slots=True)
class Served:
    """One partition of an hour as served: the watermark it is exact at, its value, and from where."""

    watermark: int
    counted: Counted
    source: str


async def read_served(
    redis: ProjectionsClient, keys: Keys, snapshots: Snapshots | None, hour: int, partitions: int
) -> dict[int, Served]:
    """Each partition's watermark and the hour's served value, read in one MULTI per partition (an
    apply is one script on the partition's slot, so they agree); a cold partition's value comes from
    the snapshot entry Redis names."""
    return {p: await _served(redis, keys, snapshots, hour, p) for p in range(partitions)}


async def _served(
    redis: ProjectionsClient, keys: Keys, snapshots: Snapshots | None, hour: int, p: int
) -> Served:
    token = hour_token(hour)
    quarters = [quarter_token(hour, q) for q in range(QUARTERS_PER_HOUR)]
    layout = CellLayout(keys)
    for _ in range(5):
        gen = keys.live_generation(await redis.get(keys.generation(p)))
        async with redis.pipeline(transaction=True) as pipe:
            pipe.get(keys.watermark(gen, p))
            pipe.hget(keys.cold(gen, p), token)
            pipe.get(keys.phases(gen, p))
            pipe.get(keys.generation(p))
            for cell in (token, *quarters):
                pipe.get(layout.users(Cell(gen, p, cell)))
                pipe.hmget(layout.counts(Cell(gen, p, cell)), *COUNTERS)
            wm, at, phases, now, *cells = await pipe.execute()
        if keys.live_generation(now) != gen:
            continue  # a replay switched meanwhile
        # A generation that records no phases is from before quarter-hours: it has none to compare.
        split = phases is not None
        if at is not None:
            if snapshots is None:
                raise Moved(f"p{p} of hour {token} is cold but there is no snapshot store")
            state = await snapshots.entry(p, token, int(at))
            found = [state, *(state.quarters or [EMPTY_CELL] * QUARTERS_PER_HOUR)]
            counted = [Counted(c.clicks, c.impressions, hll.registers(c.hll or b"")) for c in found]
            return Served(int(wm or 0), _hour(counted, split), "snapshot")
        counted = [
            Counted(int(clicks or 0), int(impressions or 0), hll.registers(raw or b""))
            for raw, (clicks, impressions) in zip(cells[::2], cells[1::2], strict=True)
        ]
        return Served(int(wm or 0), _hour(counted, split), "redis")
    raise Moved(f"the generation kept switching while p{p} of hour {token} was read")


def _hour(cells: list[Counted], quarters: bool) -> Counted:
    """The hour's cell, carrying its quarter-hours' when they are to be compared."""
    hour = cells[0]
    return dataclasses.replace(hour, quarters=tuple(cells[1:])) if quarters else hour


async def days_overlapping(
    redis: ProjectionsClient, keys: Keys, hours: Iterable[int], partitions: int
) -> list[str]:
    """The day rollups of the live generation (its phases, per partition) that hold any of `hours`."""
    wanted = sorted(set(hours))
    found: set[str] = set()
    for p in range(partitions):
        gen = keys.live_generation(await redis.get(keys.generation(p)))
        phases = parse_phases(await redis.get(keys.phases(gen, p)))
        if not phases:
            continue  # a generation from before day rollups
        for hour in wanted:
            for q in range(QUARTERS_PER_HOUR):
                found.update(day_tokens(hour, q, phases))
    return sorted(found, key=parse_day_token)


async def audit_day(
    redis: ProjectionsClient, keys: Keys, snapshots: Snapshots | None, token: str, partitions: int
) -> DayAudit:
    """The day rollup checked in every partition whose live generation keeps its phase."""
    parts = [await _day_part(redis, keys, snapshots, token, p) for p in range(partitions)]
    return DayAudit(token, tuple(p for p in parts if p is not None))


async def _day_part(
    redis: ProjectionsClient, keys: Keys, snapshots: Snapshots | None, token: str, p: int
) -> DayPart | None:
    cells = day_components(token)
    hours = sorted({h for h in map(owning_hour, cells) if h is not None})
    layout = CellLayout(keys)
    for _ in range(5):
        gen = keys.live_generation(await redis.get(keys.generation(p)))
        async with redis.pipeline(transaction=True) as pipe:
            pipe.get(keys.phases(gen, p))
            pipe.hmget(keys.cold(gen, p), [hour_token(h) for h in hours])
            pipe.get(keys.generation(p))
            for cell in (token, *cells):
                pipe.get(layout.users(Cell(gen, p, cell)))
                pipe.hmget(layout.counts(Cell(gen, p, cell)), *COUNTERS)
            phases, cold, now, *found = await pipe.execute()
        if keys.live_generation(now) != gen:
            continue  # a replay switched meanwhile
        minute = parse_day_token(token) % DAY_MS // MINUTE_MS
        if minute not in parse_phases(phases):
            return None  # this generation keeps no rollup of that phase
        stored = [
            Counted(int(clicks or 0), int(impressions or 0), hll.registers(raw or b""))
            for raw, (clicks, impressions) in zip(found[::2], found[1::2], strict=True)
        ]
        at = {h: int(a) for h, a in zip(hours, cold, strict=True) if a is not None}
        components = await _thawed(snapshots, p, cells, stored[1:], at)
        return check_day(p, token, stored[0], components)
    raise Moved(f"the generation kept switching while p{p} of day rollup {token} was read")


async def _thawed(
    snapshots: Snapshots | None, p: int, cells: list[str], stored: list[Counted], cold: dict[int, int]
) -> list[Counted]:
    """The components, those of cold hours read from the hours' snapshot entries."""
    if not cold:
        return stored
    if snapshots is None:
        raise Moved(f"p{p} has cold hours but there is no snapshot store")
    entries: dict[int, HourState] = {}
    out = []
    for cell, value in zip(cells, stored, strict=True):
        hour = owning_hour(cell)
        if hour is None or hour not in cold:
            out.append(value)
            continue
        if hour not in entries:
            entries[hour] = await snapshots.entry(p, hour_token(hour), cold[hour])
        entry = entries[hour]
        state: HourState | CellState = entry
        if cell != hour_token(hour):  # a quarter-hour: an entry from before them has none
            state = (entry.quarters or (EMPTY_CELL,) * QUARTERS_PER_HOUR)[parse_quarter_token(cell)[1]]
        out.append(Counted(state.clicks, state.impressions, hll.registers(state.hll or b"")))
    return out


@dataclass(slots=True)
class HourLog:
    """One hour's messages, per partition, column by column in stream order."""

    subjects: dict[int, list[str]] = field(default_factory=dict)
    payloads: dict[int, list[bytes]] = field(default_factory=dict)
    seqs: dict[int, list[int]] = field(default_factory=dict)
    stamps: dict[int, list[int]] = field(default_factory=dict)

    def columns(self, partition: int) -> Columns:
        return (
            self.subjects.get(partition, []),
            self.payloads.get(partition, []),
            self.seqs.get(partition, []),
            self.stamps.get(partition, []),
        )


async def read_hour_log(nc: NATS, settings: Settings, hour: int) -> HourLog:
    """Every message on the hour's subjects (all partitions), through one ephemeral consumer."""
    config = ConsumerConfig(
        filter_subject=f"{settings.subject_prefix}.{hour_token(hour)}.*",
        deliver_policy=DeliverPolicy.ALL,
    )
    return await _read(nc, settings, config)


async def read_partition_span(
    nc: NATS, settings: Settings, partition: int, from_ms: int, upto_seq: int
) -> HourLog:
    """Every hour's messages of one partition stored from `from_ms` on, up to stream seq `upto_seq`:
    the keyed events that may have refused an hour's keyed events (a key counts once per user within
    the dedup window, whichever hour it came in)."""
    config = ConsumerConfig(
        filter_subject=partition_filter(settings.subject_prefix, partition),
        deliver_policy=DeliverPolicy.BY_START_TIME,
        opt_start_time=dt.datetime.fromtimestamp(max(from_ms, 0) / 1000, tz=dt.UTC),
    )
    return await _read(nc, settings, config, upto_seq)


async def _read(nc: NATS, settings: Settings, config: ConsumerConfig, upto_seq: int | None = None) -> HourLog:
    """What an ephemeral consumer without acks delivers, up to `upto_seq`, split by partition."""
    js = nc.jetstream()
    config.ack_policy = AckPolicy.NONE
    config.inactive_threshold = 30.0
    consumer = await js.add_consumer(settings.stream_name, config)
    pending = consumer.num_pending or 0
    found = HourLog()
    puller = Puller(nc, settings.stream_name, consumer.name, settings.pull_reader)
    try:
        while pending > 0:
            fetched = await puller.fetch(min(AUDIT_FETCH, pending), 5.0)
            for i in range(len(fetched)):
                if upto_seq is not None and fetched.seqs[i] > upto_seq:
                    return found
                subj = fetched.subjects[i]
                try:
                    _, partition = parse_subject(settings.subject_prefix, subj)
                except ValueError:
                    continue  # no partition's subject: no projector reads it (nor counts it)
                found.subjects.setdefault(partition, []).append(subj)
                found.payloads.setdefault(partition, []).append(fetched.payloads[i])
                found.seqs.setdefault(partition, []).append(fetched.seqs[i])
                found.stamps.setdefault(partition, []).append(fetched.stamps[i])
            pending -= len(fetched)
    finally:
        await puller.close()
        with contextlib.suppress(Exception):
            await js.delete_consumer(settings.stream_name, consumer.name)
    return found


Columns = tuple[list[str], list[bytes], list[int], list[int]]
"""Messages column by column in stream order: subjects, payloads, stream seqs, stream ms."""

KEYED_LOOKBACK = 2
"""Dedup windows of the partition's messages read at a time, going back from an hour's first keyed
event: a key the same user sent within the window, in any hour, refused it."""


@dataclass(frozen=True, slots=True)
class KeyedSpan:
    columns: Columns
    """The hour's messages, with (when it has keyed events) the partition's messages of every hour from
    far enough before its first keyed event to know what each of its keys' users last counted, up to
    its last message."""
    digest: Digest
    """`columns` folded."""
    hour_digest: Digest
    """The hour's messages alone, folded."""


async def keyed_span(nc: NATS, settings: Settings, partition: int, hour: int, columns: Columns) -> KeyedSpan:
    """`columns`, the hour's messages of `partition` in stream order, and what lends them its keys: the
    partition's messages from KEYED_LOOKBACK windows before the first keyed one, and further back
    while a user's key of the hour ends a chain of retries, each within the window of the last, that
    starts too early to know whether it counted (the log's start ends that)."""
    hour_digest = done = fold(settings, columns)
    first = first_keyed_ms(done, hour)
    if first is None:
        return KeyedSpan(columns, done, hour_digest)
    window_ms = int(settings.dedup_window_s * 1000)
    since, upto = first, columns[2][-1]
    while True:
        since -= KEYED_LOOKBACK * window_ms
        span = (await read_partition_span(nc, settings, partition, since, upto)).columns(partition)
        if not span[2]:
            return KeyedSpan(columns, done, hour_digest)  # nothing earlier there: every chain broke
        columns = merged(columns, span)
        done = fold(settings, columns)
        if not unsettled(done.deltas.keyed, hour, since, window_ms):
            return KeyedSpan(columns, done, hour_digest)
        upto = span[2][0] - 1


def unsettled(keyed: Sequence[Keyed], hour: int, since: int, window_ms: int) -> bool:
    """Whether a user's key of `hour` may have been decided by messages before `since` (ms), of which
    `keyed` (stream order) holds none: the chain of retries up to its first event there, each within
    the window of the one before, begins less than a window after `since` (a retry counts, whatever
    came before, once the window has passed since the one before it)."""
    start: dict[str, int] = {}
    last: dict[str, int] = {}
    settled: set[str] = set()
    for event in keyed:
        member, at = event.member, event.stream_ms
        if member in settled:
            continue
        if member not in last or at - last[member] > window_ms:
            start[member] = at
        last[member] = at
        if event.hour == hour:
            if start[member] - since < window_ms:
                return True
            settled.add(member)
    return False


def fold(settings: Settings, columns: Columns) -> Digest:
    """`digest` of these messages for this configuration."""
    return digest(*columns, prefix=settings.subject_prefix, partitions=settings.partitions)


def cut(columns: Columns, start: int, stop: int) -> Columns:
    """Messages `start` to `stop` (not included) of a run."""
    subjects, payloads, seqs, stamps = columns
    return subjects[start:stop], payloads[start:stop], seqs[start:stop], stamps[start:stop]


def merged(one: Columns, other: Columns) -> Columns:
    """Two runs of messages as one, in stream order, each sequence once."""
    rows = sorted(
        {
            seq: (subj, data, seq, ms)
            for subj, data, seq, ms in (*zip(*one, strict=True), *zip(*other, strict=True))
        }.values(),
        key=lambda r: r[2],
    )
    return ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows])
