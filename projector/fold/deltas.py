"""What a fold of stream messages produces: per-hour deltas and keyed events. Pure values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from contract.schema import Kind


@dataclass(slots=True)
class HourDelta:
    users: set[str] = field(default_factory=set)
    clicks: int = 0
    impressions: int = 0

    def merge(self, other: HourDelta) -> None:
        self.users |= other.users
        self.clicks += other.clicks
        self.impressions += other.impressions


class Keyed(NamedTuple):
    """An event that carried an Idempotency-Key: it counts only if its user has not sent the key within
    the window. Its user and its click or impression are left to the apply, which alone knows the keys."""

    key: str
    user: str
    stream_ms: int
    hour: int
    kind: Kind

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
