"""Audits day rollups: each day rollup of the live generation must hold exactly the union of its
components (contract.buckets.day_components), its registers the register-wise max of theirs and its
counters their sums, all read in one MULTI per partition so an apply cannot fall between the reads."""

from __future__ import annotations

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
)
from contract.hours import hour_token
from contract.keys import CLICKS_FIELD, IMPRESSIONS_FIELD, Keys
from contract.projections_client import ProjectionsClient
from contract.schema import CellState, HourState
from projector.audit.sources import EMPTY_CELL, Moved
from projector.audit.verdict import Counted, Verdict, differences
from projector.projections.snapshots import Snapshots


@dataclass(frozen=True, slots=True)
class DayPart:
    """One partition of a day rollup: the rollup as stored, and the union of its components."""

    partition: int
    rollup: Counted
    components: Counted
    differs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DayAudit:
    token: str
    parts: tuple[DayPart, ...]

    @property
    def verdict(self) -> Verdict:
        return Verdict.MISMATCH if self.differs else Verdict.OK

    @property
    def differs(self) -> tuple[str, ...]:
        return tuple(d for p in self.parts for d in p.differs)

    def totals(self, side: str) -> tuple[int, int, int]:
        """(clicks, impressions, uniques) of the `rollup` or the `components` side over the partitions."""
        counted = [getattr(p, side) for p in self.parts]
        union = hll.merge(c.registers for c in counted) if counted else bytes(hll.REGISTERS)
        return sum(c.clicks for c in counted), sum(c.impressions for c in counted), hll.count(union)

    def line(self) -> str:
        """One line: the rollup's token, its counts, its components' union, the verdict (what differs)."""
        rc, ri, ru = self.totals("rollup")
        cc, ci, cu = self.totals("components")
        head = (
            f"{self.token}  rollup clicks={rc} impressions={ri} uniques~{ru}  "
            f"components clicks={cc} impressions={ci} uniques~{cu}  {self.verdict.value}"
        )
        return head + "".join(f"\n    {d}" for d in self.differs)


def union(cells: Iterable[Counted]) -> Counted:
    """What a day rollup of these cells must hold: counters summed, registers register-wise max."""
    found = list(cells)
    return Counted(
        sum(c.clicks for c in found),
        sum(c.impressions for c in found),
        hll.merge(c.registers for c in found) if found else bytes(hll.REGISTERS),
    )


def check_day(partition: int, token: str, rollup: Counted, components: Iterable[Counted]) -> DayPart:
    """A day rollup of one partition against its components, exactly."""
    want = union(components)
    differs = differences(f"p{partition} {token}", want, rollup, ("components", "rollup"))
    return DayPart(partition, rollup, want, tuple(differs))


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
    for _ in range(5):
        gen = keys.live_generation(await redis.get(keys.generation(p)))
        async with redis.pipeline(transaction=True) as pipe:
            pipe.get(keys.phases(gen, p))
            pipe.hmget(keys.cold(gen, p), [hour_token(h) for h in hours])
            pipe.get(keys.generation(p))
            for cell in (token, *cells):
                pipe.get(keys.cell_users(gen, cell, p))
                pipe.hmget(keys.cell_counts(gen, cell, p), CLICKS_FIELD, IMPRESSIONS_FIELD)
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
