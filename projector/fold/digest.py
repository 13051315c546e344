"""Pure: a fetched run of raw stream messages to deltas and dead letters, checked and folded per subject.

It gives exactly what the reference fold in `tests/reference_fold.py` gives (`read`: decode and screen
each message, then `fold`), which `tests/unit/test_digest.py` holds it to. What it saves is per-message
work: a fetch from one partition is mostly a few subjects (the current hour and some late ones), so
the rules are checked and the events counted once over each subject's events together, and a message
is looked at on its own only when its subject's run breaks a rule or it carries Idempotency-Keys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache, partial
from itertools import chain, compress
from operator import attrgetter, is_
from typing import NamedTuple

import msgspec

from contract import schema
from contract.buckets import QUARTER_MS, QUARTERS_PER_HOUR
from contract.cells import NONE, axes_of
from contract.hours import parse_subject
from projector.fold.deltas import CellDelta, Deltas, HourDelta, Keyed
from projector.fold.rules import Rejected, all_good, screen

Decoder = Callable[[bytes], schema.AnyBatch]

_user, _kind, _key, _ts = attrgetter("user"), attrgetter("kind"), attrgetter("key"), attrgetter("ts")
_dims = attrgetter("dims")
_is_none = partial(is_, None)
_NOTHING: tuple[schema.Event, ...] = ()


class Digest(NamedTuple):
    deltas: Deltas
    rejected: list[tuple[int, list[Rejected]]]
    """(index of the message in the run, what of it must go to the dead letters)."""
    digested: int
    """How many messages were digested: all of them, or those before one of an unknown version."""
    unknown: schema.UnknownVersion | None
    """Why the message at `digested` was not read: it is never skipped, the reader must be upgraded."""


@lru_cache(maxsize=4096)
def _place(prefix: str, subj: str) -> tuple[int, int] | None:
    try:
        return parse_subject(prefix, subj)
    except ValueError:
        return None


def digest(
    subjects: Sequence[str],
    payloads: Sequence[bytes],
    seqs: Sequence[int],
    stamps: Sequence[int],
    *,
    prefix: str,
    partitions: int,
    after: int = 0,
    decoder: Decoder = schema.decode,
    dimensions: tuple[str, ...] = (),
    pairs: tuple[tuple[str, str], ...] = (),
    split: frozenset[int] = frozenset(),
) -> Digest:
    """Decode, screen and fold messages in stream order (`stamps`: when JetStream stored each, in ms),
    folding nothing at or below stream seq `after`, and into axis cells too when `dimensions` (and
    `pairs` of them) are declared, per quarter-hour as well in hours whose hour of the UTC day is in
    `split` (contract.buckets.split_hours). Stops in front of a batch of an unknown version."""
    batches, rejected, unknown = _decode(payloads, decoder)
    kept, hours = _screen(subjects, batches, rejected, prefix, partitions)
    rejected.sort(key=_first)
    folded = [i for i in range(len(batches)) if seqs[i] > after]
    if not folded:
        return Digest(Deltas(), rejected, len(batches), unknown)
    deltas = _fold(folded, batches, kept, hours, seqs, stamps, dimensions, pairs, split)
    return Digest(deltas, rejected, len(batches), unknown)


def _decode(
    payloads: Sequence[bytes], decoder: Decoder
) -> tuple[list[tuple[schema.Event, ...]], list[tuple[int, list[Rejected]]], schema.UnknownVersion | None]:
    """Each payload's events, up to one of an unknown version; one that is no batch holds none."""
    batches: list[tuple[schema.Event, ...]] = []
    rejected: list[tuple[int, list[Rejected]]] = []
    for i, payload in enumerate(payloads):
        try:
            batches.append(decoder(payload).events)
        except schema.UnknownVersion as exc:
            return batches, rejected, exc
        except (msgspec.DecodeError, ValueError) as exc:
            batches.append(_NOTHING)
            rejected.append((i, [Rejected(-1, f"not a batch: {exc}")]))
    return batches, rejected, None


def _screen(
    subjects: Sequence[str],
    batches: list[tuple[schema.Event, ...]],
    rejected: list[tuple[int, list[Rejected]]],
    prefix: str,
    partitions: int,
) -> tuple[list[tuple[schema.Event, ...] | None], list[int]]:
    """The rules, checked once per subject's run where it can be: what each message keeps (None: the
    batch as decoded) and the hour of its subject. Adds what breaks them to `rejected`."""
    count = len(batches)
    runs: dict[str, list[int]] = {}
    for i in range(count):
        runs.setdefault(subjects[i], []).append(i)
    kept: list[tuple[schema.Event, ...] | None] = [None] * count
    hours: list[int] = [0] * count
    for subj, members in runs.items():
        place = _place(prefix, subj)
        if place is None:
            reason = f"subject {subj} is not <prefix>.<YYYYMMDDHH>.<partition>"
            for i in members:
                if batches[i] or not _rejected_whole(rejected, i):
                    rejected.append((i, [Rejected(-1, reason)]))
                kept[i] = _NOTHING
            continue
        hour, partition = place
        for i in members:
            hours[i] = hour
        events = list(chain.from_iterable(batches[i] for i in members))
        if not events or all_good(events, hour, partition, partitions):
            continue
        for i in members:
            if not batches[i]:
                continue
            good, why = screen(schema.batch_of(events=batches[i]), hour, partition, partitions)
            if why:
                kept[i] = good.events
                rejected.append((i, why))
    return kept, hours


def _fold(
    folded: list[int],
    batches: list[tuple[schema.Event, ...]],
    kept: list[tuple[schema.Event, ...] | None],
    hours: list[int],
    seqs: Sequence[int],
    stamps: Sequence[int],
    dimensions: tuple[str, ...] = (),
    pairs: tuple[tuple[str, str], ...] = (),
    split: frozenset[int] = frozenset(),
) -> Deltas:
    """The kept events of the `folded` messages, per quarter-hour (and per axis), at C speed where there
    are no keys (nor dimensions)."""
    deltas = Deltas()
    deltas.last_seq = max(seqs[i] for i in folded)
    deltas.last_ms = max(stamps[i] for i in folded)
    by_hour: dict[int, list[schema.Event]] = {}
    for i in folded:
        mine = batches[i] if kept[i] is None else kept[i]
        if mine:
            by_hour.setdefault(hours[i], []).extend(mine)
    any_keyed = False
    for hour, events in by_hour.items():
        deltas.events += len(events)
        quarters = deltas.hour(hour).quarters
        if not any(map(_key, events)):
            unkeyed = events
        else:
            any_keyed = True
            unkeyed = list(compress(events, map(_is_none, map(_key, events))))
        if unkeyed:
            _count(quarters, unkeyed)
        if dimensions:
            _count_axes(deltas.hour(hour), events, unkeyed, dimensions, pairs, hour % 24 in split)
    if any_keyed:
        # In stream order, across hours: the first of a key within the window is the one that counts.
        keyed = deltas.keyed
        for i in folded:
            mine = batches[i] if kept[i] is None else kept[i]
            if mine and any(map(_key, mine)):
                for event in compress(mine, map(_key, mine)):
                    quarter = event.ts // QUARTER_MS % QUARTERS_PER_HOUR
                    axes = _axes_of(event.dims, dimensions, pairs) if dimensions else ()
                    keyed.append(Keyed(event.key, event.user, stamps[i], hours[i], event.kind, quarter, axes))  # type: ignore[arg-type]
    return deltas


def _count(quarters: tuple[CellDelta, ...], events: list[schema.Event]) -> None:
    """Unkeyed events of one hour into its quarter-hours, at C speed: in one go when they all fall in
    one quarter (a live fetch spans seconds), else one pass per quarter they touch."""
    stamps = list(map(_ts, events))
    first = min(stamps) // QUARTER_MS
    if first == max(stamps) // QUARTER_MS:
        _add(quarters[first % QUARTERS_PER_HOUR], events)
        return
    which = list(map(QUARTER_MS.__rfloordiv__, stamps))
    for at in set(which):
        _add(quarters[at % QUARTERS_PER_HOUR], list(compress(events, map(at.__eq__, which))))


def _count_axes(
    delta: HourDelta,
    events: list[schema.Event],
    unkeyed: list[schema.Event],
    dimensions: tuple[str, ...],
    pairs: tuple[tuple[str, str], ...],
    split: bool,
) -> None:
    """An hour's events into its axis cells (and, `split`, its quarter-hours' too): an hour with no
    dimension at all is plain (its NONE cell is its quarters' union, spelled out by nobody); otherwise
    one by one, every axis named in stream order, keyed events' too (the apply counts those)."""
    axes = delta.axes
    if not any(map(_dims, events)):
        axes[NONE] = CellDelta()
        delta.plain = True
        if split:
            delta.quarter_axes = (
                {NONE: CellDelta()},
                {NONE: CellDelta()},
                {NONE: CellDelta()},
                {NONE: CellDelta()},
            )
        return
    if split:
        delta.quarter_axes = ({}, {}, {}, {})
    counted = unkeyed if unkeyed is events else set(map(id, unkeyed))
    every = counted is events
    for event in events:
        dims = event.dims
        named = _axes_of(dims, dimensions, pairs) if dims else _NONE_ONLY
        counts = every or id(event) in counted
        _add_axes(axes, named, event, counts)
        if split:
            quarter = event.ts // QUARTER_MS % QUARTERS_PER_HOUR
            _add_axes(delta.quarter_axes[quarter], named, event, counts)


def _add_axes(axes: dict[str, CellDelta], named: tuple[str, ...], event: schema.Event, counts: bool) -> None:
    """An event into its axis cells; a keyed one (not `counts`) only names them, in stream order."""
    if not counts:
        for axis in named:
            if axis not in axes:
                axes[axis] = CellDelta()
        return
    user, click = event.user, event.kind is schema.Kind.CLICK
    for axis in named:
        cell = axes.get(axis)
        if cell is None:
            cell = axes[axis] = CellDelta()
        cell.users.add(user)
        if click:
            cell.clicks += 1
        else:
            cell.impressions += 1


_NONE_ONLY = (NONE,)
_axes_of = lru_cache(maxsize=1 << 16)(axes_of)
"""An event's axes, remembered: an hour's events repeat few combinations of values."""


def _add(cell: CellDelta, events: list[schema.Event]) -> None:
    kinds = list(map(_kind, events))
    clicks = kinds.count(schema.Kind.CLICK)
    cell.users.update(map(_user, events))
    cell.clicks += clicks
    cell.impressions += len(kinds) - clicks


def _first(item: tuple[int, list[Rejected]]) -> int:
    return item[0]


def _rejected_whole(rejected: list[tuple[int, list[Rejected]]], i: int) -> bool:
    return any(at == i for at, _ in rejected)
