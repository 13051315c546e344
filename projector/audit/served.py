"""The audit's reads of what is served, each in one consistent view: an hour (from Redis or, for a cold
hour, its snapshot entry) with its quarter-hours and each partition's watermark, and a day rollup with
its components. The hour's messages come from the log (`projector/log/hour_log.py`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

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
from contract.cells import COUNTERS, Cell, CellLayout, axis_counts
from contract.hours import hour_token
from contract.keys import Keys
from contract.schema import CellState, HourState
from deploy.projections_client import ProjectionsClient
from projector.audit.verdict import Counted, DayAudit, DayPart, check_day
from projector.projections.snapshots import Snapshots

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
        hour_cell = _hour(counted, split)
        axes = await _axes(redis, layout, gen, p, hour, wm)
        if axes is _MOVED:
            continue  # an apply came between the two reads
        if axes is not None:
            hour_cell = dataclasses.replace(hour_cell, axes=axes)
        return Served(int(wm or 0), hour_cell, "redis")
    raise Moved(f"the generation kept switching while p{p} of hour {token} was read")


_MOVED: dict[str, Counted] = {}
"""`_axes`'s answer when the watermark moved since the hour was read."""


async def _axes(
    redis: ProjectionsClient, layout: CellLayout, gen: int, p: int, hour: int, wm: bytes | None
) -> dict[str, Counted] | None:
    """The hour's axis cells at the watermark the hour was read at: None when it keeps none (counted
    without dimensions, or back from the snapshot store), _MOVED when an apply came in between."""
    index = layout.axes(gen, p, hour)
    fields = await redis.hkeys(index)
    axes = [f.decode() if isinstance(f, bytes) else str(f) for f in fields]
    if not axes or "!partial" in axes:
        return None
    axes = [a for a in axes if a[0] not in "#!"]
    async with redis.pipeline(transaction=True) as pipe:
        pipe.get(layout.keys.watermark(gen, p))
        pipe.hmget(index, axes)
        for axis in axes:
            pipe.get(layout.axis_users(gen, p, hour, axis))
        now, counts, *users = await pipe.execute()
    if now != wm:
        return _MOVED
    return {
        axis: Counted(*axis_counts(raw), hll.registers(registers or b""))
        for axis, raw, registers in zip(axes, counts, users, strict=True)
    }


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
