"""The pure fold: stream messages to per-hour deltas. No NATS, no Redis, no clock."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from contract.hours import hour_of
from contract.schema import AnyBatch, Kind


@dataclass(slots=True)
class HourDelta:
    users: set[str] = field(default_factory=set)
    clicks: int = 0
    impressions: int = 0

    def merge(self, other: HourDelta) -> None:
        self.users |= other.users
        self.clicks += other.clicks
        self.impressions += other.impressions


@dataclass(slots=True)
class Deltas:
    """What a run of stream messages adds to the projections, and the last sequence it covers."""

    hours: dict[int, HourDelta] = field(default_factory=dict)
    last_seq: int = 0
    events: int = 0

    def hour(self, hour: int) -> HourDelta:
        delta = self.hours.get(hour)
        if delta is None:
            delta = self.hours[hour] = HourDelta()
        return delta

    def __bool__(self) -> bool:
        return self.last_seq > 0


def fold(messages: Iterable[tuple[int, AnyBatch]], after: int = 0) -> Deltas:
    """Fold (stream sequence, batch) pairs in order, skipping every sequence at or below `after`."""
    deltas = Deltas(last_seq=0)
    for seq, batch in messages:
        if seq <= after:
            continue
        deltas.last_seq = max(deltas.last_seq, seq)
        for event in batch.events:
            delta = deltas.hour(hour_of(event.ts))
            delta.users.add(event.user)
            if event.kind is Kind.CLICK:
                delta.clicks += 1
            else:
                delta.impressions += 1
            deltas.events += 1
    return deltas


def merge(a: Deltas, b: Deltas) -> Deltas:
    """Combine two folds as if their messages had been folded together."""
    out = Deltas(last_seq=max(a.last_seq, b.last_seq), events=a.events + b.events)
    for source in (a, b):
        for hour, delta in source.hours.items():
            out.hour(hour).merge(delta)
    return out
