"""An hour's messages read from the stream (`ephemeral_read.py`), column by column in stream order;
and, for a partition, widened by the messages that lend them their keys (`keyed_span`): what the audit
recounts and a single-hour replay folds, the same way."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig, DeliverPolicy

from contract.buckets import split_hours
from contract.hours import hour_token, parse_subject, partition_filter
from deploy.settings import Settings
from projector.fold.deltas import Keyed
from projector.fold.digest import Digest, digest
from projector.log.ephemeral_read import delivered

Columns = tuple[list[str], list[bytes], list[int], list[int]]
"""Messages column by column in stream order: subjects, payloads, stream seqs, stream ms."""


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
    """What the stream delivers for `config`, up to `upto_seq`, split by partition."""
    found = HourLog()
    batches = delivered(nc, settings.stream_name, config, settings.pull_reader)
    async with contextlib.aclosing(batches):
        async for fetched in batches:
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
    return found


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
    return digest(
        *columns,
        prefix=settings.subject_prefix,
        partitions=settings.partitions,
        dimensions=settings.dimension_names,
        pairs=settings.dimension_pair_names,
        split=split_hours(settings.day_phases),
    )


def first_keyed_ms(done: Digest, hour: int) -> int | None:
    """When the hour's first keyed event was stored (None: the hour has none)."""
    return min((k.stream_ms for k in done.deltas.keyed if k.hour == hour), default=None)
