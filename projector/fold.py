"""The pure fold: stream messages to per-hour deltas. No NATS, no Redis, no clock."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import NamedTuple

from contract.hours import HOUR_MS, hour_of
from contract.schema import AnyBatch, Event, Kind


class Message(NamedTuple):
    """One stream message as the fold sees it."""

    seq: int
    batch: AnyBatch
    stream_ms: int = 0
    """When JetStream stored it: the clock that idempotency windows are measured on."""


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


def fold(messages: Iterable[Message], after: int = 0) -> Deltas:
    """Fold messages in stream order, skipping every sequence at or below `after`.

    Users of unkeyed events go into the hour's set (adding a user twice changes nothing); keyed
    events are left whole to the apply, so a refused duplicate changes neither counts nor uniques.
    """
    deltas = Deltas()
    for seq, batch, stream_ms in messages:
        if seq <= after:
            continue
        deltas.last_seq = max(deltas.last_seq, seq)
        deltas.last_ms = max(deltas.last_ms, stream_ms)
        events = batch.events
        if not events:
            continue
        deltas.events += len(events)
        if not _fold_one_hour(deltas, events):
            for event in events:
                _fold_event(deltas, event, stream_ms)
    return deltas


def _fold_one_hour(deltas: Deltas, events: tuple[Event, ...]) -> bool:
    """The common case, a whole message in one hour and without keys, at C speed; False otherwise."""
    stamps = list(map(_ts, events))
    hour = hour_of(stamps[0])
    start = hour * HOUR_MS
    if min(stamps) < start or max(stamps) >= start + HOUR_MS or any(map(_key, events)):
        return False
    kinds = list(map(_kind, events))
    clicks = kinds.count(Kind.CLICK)
    delta = deltas.hour(hour)
    delta.users.update(map(_user, events))
    delta.clicks += clicks
    delta.impressions += len(kinds) - clicks
    return True


def _fold_event(deltas: Deltas, event: Event, stream_ms: int) -> None:
    hour = hour_of(event.ts)
    delta = deltas.hour(hour)
    if event.key is not None:
        deltas.keyed.append(Keyed(event.key, event.user, stream_ms, hour, event.kind))
        return
    delta.users.add(event.user)
    if event.kind is Kind.CLICK:
        delta.clicks += 1
    else:
        delta.impressions += 1


_ts, _key, _kind, _user = (attrgetter(name) for name in ("ts", "key", "kind", "user"))


def merge(a: Deltas, b: Deltas) -> Deltas:
    """Combine two folds as if their messages had been folded together (a's before b's)."""
    out = Deltas(
        keyed=a.keyed + b.keyed,
        last_seq=max(a.last_seq, b.last_seq),
        last_ms=max(a.last_ms, b.last_ms),
        events=a.events + b.events,
    )
    for source in (a, b):
        for hour, delta in source.hours.items():
            out.hour(hour).merge(delta)
    return out
