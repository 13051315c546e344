"""What a fold of stream messages produces: per-quarter-hour deltas (grouped by hour) and keyed events.
Pure values, no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from contract.cells import NONE
from contract.schema import Kind


@dataclass(slots=True)
class CellDelta:
    """What a run of unkeyed events adds to one stored bucket (here a quarter-hour)."""

    users: set[str] = field(default_factory=set)
    clicks: int = 0
    impressions: int = 0

    def merge(self, other: CellDelta) -> None:
        self.users |= other.users
        self.clicks += other.clicks
        self.impressions += other.impressions


def _four() -> tuple[CellDelta, CellDelta, CellDelta, CellDelta]:
    return CellDelta(), CellDelta(), CellDelta(), CellDelta()


@dataclass(slots=True)
class HourDelta:
    """An hour's unkeyed events, split into its four quarter-hours (what the apply writes); the hour's
    own users and counts are their union and sums."""

    quarters: tuple[CellDelta, CellDelta, CellDelta, CellDelta] = field(default_factory=_four)
    axes: dict[str, CellDelta] = field(default_factory=dict)
    """The hour's unkeyed events again, per axis (contract.cells.axes_of), when dimensions are
    declared: in the order each axis first appears in the stream, keyed events' axes included (with
    nothing of theirs added), which is the order new values claim cells under the bound."""
    plain: bool = False
    """No event of the hour carries a dimension: its one axis, NONE, holds exactly the hour's events,
    so it is not kept twice (its entry in `axes` stays empty, and the apply adds the NONE cell to the
    hour's groups instead); `axis_cells` spells it out."""
    quarter_axes: tuple[dict[str, CellDelta], ...] = ()
    """The same per quarter-hour, for an hour a kept zone's day starts inside (a split hour, e.g.
    18:00 UTC for Asia/Kolkata): a local day's breakdown reads its quarters. Empty for other hours."""

    def axis_cells(self) -> dict[str, CellDelta]:
        """`axes`, with NONE's events spelled out when the hour is plain."""
        if not self.plain:
            return self.axes
        whole = CellDelta()
        for q in self.quarters:
            whole.merge(q)
        return {**self.axes, NONE: whole}

    def quarter_axis_cells(self) -> tuple[dict[str, CellDelta], ...]:
        """`quarter_axes`, with NONE's events spelled out per quarter when the hour is plain."""
        if not self.plain or not self.quarter_axes:
            return self.quarter_axes
        return tuple(
            {**axes, NONE: CellDelta(set(q.users), q.clicks, q.impressions)}
            for axes, q in zip(self.quarter_axes, self.quarters, strict=True)
        )

    @classmethod
    def of(cls, users: Iterable[str], clicks: int, impressions: int, quarter: int = 0) -> HourDelta:
        """An hour whose events all fall in one quarter (tests build deltas this way)."""
        delta = cls()
        cell = delta.quarters[quarter]
        cell.users.update(users)
        cell.clicks, cell.impressions = clicks, impressions
        return delta

    @property
    def users(self) -> set[str]:
        return set().union(*(q.users for q in self.quarters))

    @property
    def clicks(self) -> int:
        return sum(q.clicks for q in self.quarters)

    @property
    def impressions(self) -> int:
        return sum(q.impressions for q in self.quarters)

    def merge(self, other: HourDelta) -> None:
        if self.plain != other.plain and self.axes and other.axes:
            self.axes, self.quarter_axes = self.axis_cells(), self.quarter_axis_cells()
            self.plain = False
            other = HourDelta(other.quarters, other.axis_cells(), quarter_axes=other.quarter_axis_cells())
        for mine, theirs in zip(self.quarters, other.quarters, strict=True):
            mine.merge(theirs)
        if not self.axes:
            self.plain = other.plain
        for axis, theirs in other.axes.items():
            self.axes.setdefault(axis, CellDelta()).merge(theirs)
        if other.quarter_axes:
            if not self.quarter_axes:
                self.quarter_axes = ({}, {}, {}, {})
            for mine_q, theirs_q in zip(self.quarter_axes, other.quarter_axes, strict=True):
                for axis, theirs in theirs_q.items():
                    mine_q.setdefault(axis, CellDelta()).merge(theirs)


class Keyed(NamedTuple):
    """An event that carried an Idempotency-Key: it counts only if its user has not sent the key within
    the window. Its user and its click or impression are left to the apply, which alone knows the keys."""

    key: str
    user: str
    stream_ms: int
    hour: int
    kind: Kind
    quarter: int = 0
    """Which quarter-hour (0-3) of `hour` the event's timestamp falls in."""
    axes: tuple[str, ...] = ()
    """The axis cells it also counts in when it counts (contract.cells.axes_of)."""

    @property
    def member(self) -> str:
        """The dedup identity: a key is scoped to its user (user names hold no control characters)."""
        return f"{self.user}\n{self.key}"


@dataclass(slots=True)
class Deltas:
    """What a run of stream messages adds to the projections, and the last sequence it covers."""

    hours: dict[int, HourDelta] = field(default_factory=dict)
    keyed: list[Keyed] = field(default_factory=list)
    last_seq: int = 0
    last_ms: int = 0
    """The newest stream time folded: dedup entries older than it minus the window can be pruned."""
    events: int = 0

    def hour(self, hour: int) -> HourDelta:
        delta = self.hours.get(hour)
        if delta is None:
            delta = self.hours[hour] = HourDelta()
        return delta

    def __bool__(self) -> bool:
        return self.last_seq > 0
