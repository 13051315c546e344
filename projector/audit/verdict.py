"""Pure: one hour of one partition, and each of its quarter-hours, recounted from its log messages with
the projector's fold, compared with what is served for it, and the verdict over an hour's partitions;
a day rollup compared with the union of its components."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from contract import hll
from contract.buckets import QUARTERS_PER_HOUR, quarter_token
from contract.cells import NONE, OTHER, axis_of
from contract.hours import hour_token
from contract.schema import Kind
from projector.fold.deltas import CellDelta, HourDelta, Keyed
from projector.fold.digest import Digest, digest


@dataclass(frozen=True, slots=True)
class Counted:
    """One cell (an hour, a quarter-hour, a day rollup) of one partition: its counters and its
    HyperLogLog registers (one byte each); an hour may carry its four quarter-hours too."""

    clicks: int
    impressions: int
    registers: bytes
    quarters: tuple[Counted, ...] = ()
    """The hour's quarter-hours in order; empty when not compared (a generation from before them)."""
    axes: Mapping[str, Counted] | None = None
    """The hour's axis cells by axis (contract.cells); None when not compared (none are kept)."""

    @property
    def uniques(self) -> int:
        return hll.count(self.registers)


EMPTY = Counted(0, 0, bytes(hll.REGISTERS))


class Verdict(enum.StrEnum):
    OK = "ok"
    MISMATCH = "mismatch"
    PENDING = "not yet applied"
    """The log holds events of the hour past the partition's watermark: the projector is behind."""
    UNREADABLE = "unreadable"
    """A message of an unknown schema version: this audit cannot fold it."""


@dataclass(frozen=True, slots=True)
class PartitionAudit:
    partition: int
    log: Counted
    served: Counted
    source: str
    """Where the served value came from: `redis`, or `snapshot` for a cold hour."""
    verdict: Verdict
    differs: tuple[str, ...] = ()


def recount(
    subjects: Sequence[str],
    payloads: Sequence[bytes],
    seqs: Sequence[int],
    stamps: Sequence[int],
    *,
    hour: int,
    prefix: str,
    partitions: int,
    window_ms: int,
    quarters: bool = False,
) -> Counted | None:
    """The hour's messages (one partition, stream order; messages of other hours only lend their keyed
    events) folded as the projector folds them, keyed events decided as apply.lua decides them, with
    its quarter-hours when `quarters`; None when one is of a schema version unknown here."""
    done = digest(subjects, payloads, seqs, stamps, prefix=prefix, partitions=partitions)
    counted = counted_of(done, hour, window_ms)
    if counted is None or not quarters:
        return counted
    return Counted(counted.clicks, counted.impressions, counted.registers, quarters_of(done, hour, window_ms))


def counted_of(done: Digest, hour: int, window_ms: int) -> Counted | None:
    if done.unknown is not None:
        return None
    keyed = done.deltas.keyed
    mine = [k for k, counts in zip(keyed, counted_flags(keyed, window_ms), strict=True) if counts]
    return _counted(done.deltas.hours.get(hour), [k for k in mine if k.hour == hour])


def _counted(delta: HourDelta | CellDelta | None, keyed: Sequence[Keyed]) -> Counted:
    """The unkeyed events of a fold's delta plus the keyed events that count."""
    users = set(delta.users) if delta else set()
    clicks = delta.clicks if delta else 0
    impressions = delta.impressions if delta else 0
    for event in keyed:
        users.add(event.user)
        if event.kind is Kind.CLICK:
            clicks += 1
        else:
            impressions += 1
    return Counted(clicks, impressions, hll.sketch(users))


def axes_of(done: Digest, hour: int, window_ms: int, max_values: int) -> dict[str, Counted]:
    """The hour's axis cells as the apply keeps them: each axis's unkeyed events and the keyed ones
    that count, a new value past the bound (values admitted in the order first named, as axes.lua
    admits them) under its dimension's (other), a pair's under its first value's."""
    delta = done.deltas.hours.get(hour)
    axes = delta.axis_cells() if delta else {}
    keyed = done.deltas.keyed
    cells = {axis: CellDelta(set(cell.users), cell.clicks, cell.impressions) for axis, cell in axes.items()}
    for event, counts in zip(keyed, counted_flags(keyed, window_ms), strict=True):
        if counts and event.hour == hour:
            for axis in event.axes:
                cell = cells.setdefault(axis, CellDelta())
                cell.users.add(event.user)
                cell.clicks += event.kind is Kind.CLICK
                cell.impressions += event.kind is not Kind.CLICK
    kept: dict[str, CellDelta] = {}
    admitted: dict[str, int] = {}
    for axis, cell in cells.items():
        target = _admitted(axis, admitted, max_values)
        kept.setdefault(target, CellDelta()).merge(cell)
    return {axis: Counted(c.clicks, c.impressions, hll.sketch(c.users)) for axis, c in kept.items()}


def _admitted(axis: str, admitted: dict[str, int], max_values: int) -> str:
    """The axis an axis counts in: itself, or its (other) once its dimension has the bound of values."""
    family, _, value = axis.partition("=")
    first, plus, second = value.rpartition("+")
    if not value or value in (NONE, OTHER) or (plus and second in (NONE, OTHER)):
        return axis
    if admitted.get(family, 0) < max_values:
        admitted[family] = admitted.get(family, 0) + 1
        return axis
    return f"{family}={first}+{OTHER}" if plus else axis_of(family, OTHER)


def quarters_of(done: Digest, hour: int, window_ms: int) -> tuple[Counted, ...]:
    """The hour's four quarter-hours as the fold splits its events (by timestamp), its keyed events
    decided once over the whole run (a key refuses its retries across quarters and hours alike)."""
    delta = done.deltas.hours.get(hour)
    keyed = done.deltas.keyed
    mine = [k for k, f in zip(keyed, counted_flags(keyed, window_ms), strict=True) if f and k.hour == hour]
    return tuple(
        _counted(delta.quarters[q] if delta else None, [k for k in mine if k.quarter == q])
        for q in range(QUARTERS_PER_HOUR)
    )


def counted_flags(keyed: Sequence[Keyed], window_ms: int) -> list[bool]:
    """Which keyed events count, in stream order: a user's key counts again only once the window has
    passed since it last counted (apply.lua's rule, starting from no entries)."""
    last: dict[str, int] = {}
    flags = []
    for event in keyed:
        seen = last.get(event.member)
        counts = seen is None or event.stream_ms - seen > window_ms
        if counts:
            last[event.member] = event.stream_ms
        flags.append(counts)
    return flags


def compare(
    partition: int, log: Counted, served: Counted, source: str, hour: int | None = None
) -> PartitionAudit:
    """Counters exactly, the HyperLogLog register for register; with `hour`, and quarter-hours on both
    sides, each quarter-hour the same way (named by its token); axis cells on both sides, each axis
    the same way (named by its axis: `campaign=spring-sale`)."""
    differs = differences(f"p{partition}", log, served)
    if hour is not None and log.quarters and served.quarters:
        for q, (mine, theirs) in enumerate(zip(log.quarters, served.quarters, strict=True)):
            differs += differences(f"p{partition} quarter {quarter_token(hour, q)}", mine, theirs)
    if log.axes is not None and served.axes is not None:
        for axis in sorted({*log.axes, *served.axes}):
            mine, theirs = log.axes.get(axis, EMPTY), served.axes.get(axis, EMPTY)
            differs += differences(f"p{partition} {axis}", mine, theirs)
    verdict = Verdict.MISMATCH if differs else Verdict.OK
    return PartitionAudit(partition, log, served, source, verdict, tuple(differs))


def differences(
    label: str, want: Counted, found: Counted, sides: tuple[str, str] = ("log", "served")
) -> list[str]:
    """What differs between two cells, one line each, `label` first."""
    a, b = sides
    differs = []
    if want.clicks != found.clicks:
        differs.append(f"{label} clicks: {a} {want.clicks}, {b} {found.clicks}")
    if want.impressions != found.impressions:
        differs.append(f"{label} impressions: {a} {want.impressions}, {b} {found.impressions}")
    if want.registers != found.registers:
        unequal = sum(x != y for x, y in zip(want.registers, found.registers, strict=True))
        differs.append(
            f"{label} uniques: {unequal} registers differ ({a} ~{want.uniques}, {b} ~{found.uniques})"
        )
    return differs


@dataclass(frozen=True, slots=True)
class HourAudit:
    hour: int
    parts: tuple[PartitionAudit, ...]
    why: str = ""
    """For PENDING or UNREADABLE: which partition, and why."""
    pending: bool = False
    unreadable: bool = False

    @property
    def verdict(self) -> Verdict:
        if self.unreadable:
            return Verdict.UNREADABLE
        if any(p.verdict is Verdict.MISMATCH for p in self.parts):
            return Verdict.MISMATCH  # found up to the watermarks: later events cannot mend it
        if self.pending:
            return Verdict.PENDING
        return Verdict.OK

    @property
    def differs(self) -> tuple[str, ...]:
        return tuple(d for p in self.parts for d in p.differs)

    def totals(self, side: str) -> tuple[int, int, int]:
        """(clicks, impressions, uniques) of the `log` or the `served` side: counters summed over the
        partitions, uniques the PFCOUNT-like estimate of the union of their registers."""
        counted = [getattr(p, side) for p in self.parts]
        union = hll.merge(c.registers for c in counted) if counted else EMPTY.registers
        return sum(c.clicks for c in counted), sum(c.impressions for c in counted), hll.count(union)

    def line(self) -> str:
        """One line: the hour, log counts, served counts, the verdict (and what differs)."""
        token = hour_token(self.hour)
        if self.unreadable:
            return f"{token}  {self.verdict.value}: {self.why}"
        lc, li, lu = self.totals("log")
        sc, si, su = self.totals("served")
        cold = sum(p.source == "snapshot" for p in self.parts)
        where = f" ({cold} partition(s) cold)" if cold else ""
        head = (
            f"{token}  log clicks={lc} impressions={li} uniques~{lu}  "
            f"served clicks={sc} impressions={si} uniques~{su}{where}  {self.verdict.value}"
        )
        if self.verdict is Verdict.PENDING:
            head += f": {self.why}"
        return head + ("".join(f"\n    {d}" for d in self.differs))


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
