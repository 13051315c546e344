"""Pure checks of stream messages against the rules ingest enforces: what may be folded, what is dead.

Anyone with NATS access can publish to an event subject, so the projector trusts nothing it reads: an
event that breaks a rule ingest would have refused, or that sits on another hour's or partition's
subject, is rejected on its own while the rest of its batch applies.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from itertools import chain, repeat
from operator import attrgetter, itemgetter
from typing import NamedTuple

from contract.hours import HOUR_MS
from contract.schema import (
    DIMENSION_NAME,
    DIMENSION_VALUE,
    MAX_KEY_CHARS,
    MAX_USER_BYTES,
    AnyBatch,
    Dimensions,
    Event,
    batch_of,
    dims_problem,
    key_problem,
    user_problem,
)

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_ts, _user, _key, _dims = attrgetter("ts"), attrgetter("user"), attrgetter("key"), attrgetter("dims")
_name, _value = itemgetter(0), itemgetter(1)


class Rejected(NamedTuple):
    """One event (position >= 0) or a whole message (position -1) that must go to the dead letters."""

    position: int
    reason: str


def screen(batch: AnyBatch, hour: int, partition: int, partitions: int) -> tuple[AnyBatch, list[Rejected]]:
    """The batch without its rule-breaking events, and why each of those was rejected.

    `hour` and `partition` are those of the subject the message was read from.
    """
    events = batch.events
    if not events or all_good(events, hour, partition, partitions):
        return batch, []
    kept: list[Event] = []
    rejected: list[Rejected] = []
    for i, event in enumerate(events):
        reason = event_problem(event, hour, partition, partitions)
        if reason is None:
            kept.append(event)
        else:
            rejected.append(Rejected(i, reason))
    return batch_of(events=tuple(kept)), rejected


def event_problem(event: Event, hour: int, partition: int, partitions: int) -> str | None:
    if not hour * HOUR_MS <= event.ts < (hour + 1) * HOUR_MS:
        return f"timestamp {event.ts} is not in the hour of its subject"
    problem = user_problem(event.user)
    if problem is not None:
        return f"user {problem}"
    if zlib.crc32(event.user.encode()) % partitions != partition:
        return f"user belongs to partition {zlib.crc32(event.user.encode()) % partitions}, not {partition}"
    if event.key is not None:
        problem = key_problem(event.key)
        if problem is not None:
            return f"Idempotency-Key {problem}"
    if event.dims:
        return dims_problem(event.dims)
    return None


def all_good(events: Sequence[Event], hour: int, partition: int, partitions: int) -> bool:
    """The common case, checked at C speed where it can be: every event passes. True for some
    events means True for any part of them, so one call can clear many messages of a subject."""
    stamps = list(map(_ts, events))
    if min(stamps) < hour * HOUR_MS or max(stamps) >= (hour + 1) * HOUR_MS:
        return False
    users = set(map(_user, events))
    if "" in users or max(map(len, users)) * 4 > MAX_USER_BYTES:
        return False
    joined = "".join(users)
    # Control characters are never printable; a few harmless ones are not either, so only then look.
    if not joined.isprintable() and _CONTROL.search(joined):
        return False
    if any(map(str.isspace, users)):
        return False
    if set(map(partitions.__rmod__, map(zlib.crc32, map(str.encode, users)))) != {partition}:
        return False
    combos = set(map(_dims, events))
    combos.discard(())
    if combos and not _dims_good(combos):
        return False
    keys = set(map(_key, events))
    keys.discard(None)
    if not keys:
        return True
    joined = "".join(keys)
    return (
        min(map(len, keys)) >= 1
        and max(map(len, keys)) <= MAX_KEY_CHARS
        and joined.isascii()
        and joined.isprintable()
    )


def _dims_good(combos: set[Dimensions]) -> bool:
    """Every combination of dimensions passes, at C speed: names in order per distinct list of names,
    and each distinct name and value checked once (values repeat across combinations)."""
    pairs = list(chain.from_iterable(combos))
    for order in set(map(tuple, map(map, repeat(_name), combos))):
        if list(order) != sorted(set(order)):
            return False
    names, values = set(map(_name, pairs)), set(map(_value, pairs))
    return all(map(DIMENSION_NAME.fullmatch, names)) and all(map(DIMENSION_VALUE.fullmatch, values))
