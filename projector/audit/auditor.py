"""Audits hours: each hour's served value (and its quarter-hours') read with its watermarks, then its log
messages up to them recounted with the projector's fold and compared, partition by partition; and the
day rollups holding them against their components."""

from __future__ import annotations

import bisect
import dataclasses
import functools
import logging
from dataclasses import dataclass

from nats.aio.client import Client as NATS

from contract.hours import parse_subject
from contract.keys import Keys
from contract.projections_client import ProjectionsClient
from contract.settings import Settings
from projector.audit.sources import (
    audit_day,
    days_overlapping,
    read_hour_log,
    read_partition_span,
    read_served,
)
from projector.audit.verdict import (
    Counted,
    DayAudit,
    HourAudit,
    PartitionAudit,
    compare,
    counted_of,
    first_keyed_ms,
    quarters_of,
)
from projector.fold.digest import digest
from projector.projections.snapshots import Snapshots, open_snapshots

log = logging.getLogger("audit")

Columns = tuple[list[str], list[bytes], list[int], list[int]]

KEYED_LOOKBACK = 2
"""Dedup windows before an hour's first keyed event whose keyed events the audit folds with the hour's:
a key the same user sent within the window, in any hour, refused it (a chain of one key's retries
longer than this is the one case the audit may call a mismatch wrongly)."""


@dataclass
class Auditor:
    settings: Settings
    nc: NATS
    redis: ProjectionsClient
    snapshots: Snapshots | None = None

    @classmethod
    async def open(cls, settings: Settings, nc: NATS, redis: ProjectionsClient) -> Auditor:
        return cls(settings, nc, redis, await open_snapshots(nc, redis, settings))

    async def hour(self, hour: int) -> HourAudit:
        """The hour audited: served first (with the watermarks), then the log up to them, so events
        still in flight are no false alarm; messages past a watermark make the hour PENDING."""
        settings = self.settings
        if self.snapshots is None:
            self.snapshots = await open_snapshots(self.nc, self.redis, settings)
        served = await read_served(
            self.redis, Keys(settings.key_prefix), self.snapshots, hour, settings.partitions
        )
        found = await read_hour_log(self.nc, settings, hour)
        parts: list[PartitionAudit] = []
        behind: list[str] = []
        for p in range(settings.partitions):
            subjects, payloads, seqs, stamps = found.columns(p)
            wm = served[p].watermark
            cut = bisect.bisect_right(seqs, wm)
            if cut < len(seqs):
                behind.append(f"p{p}: {len(seqs) - cut} message(s) past its watermark {wm}")
            columns = (subjects[:cut], payloads[:cut], seqs[:cut], stamps[:cut])
            counted = await self._recount(p, hour, columns, quarters=bool(served[p].counted.quarters))
            if counted is None:
                why = f"p{p}: a message of a schema version this audit does not know; upgrade it"
                return HourAudit(hour, (), why=why, unreadable=True)
            parts.append(compare(p, counted, served[p].counted, served[p].source, hour))
        return HourAudit(hour, tuple(parts), why="; ".join(behind), pending=bool(behind))

    async def days(self, hours: list[int]) -> list[str]:
        """The day rollups of the live generation that hold any of `hours`."""
        settings = self.settings
        return await days_overlapping(self.redis, Keys(settings.key_prefix), hours, settings.partitions)

    async def day(self, token: str) -> DayAudit:
        """The day rollup against its components, in every partition."""
        settings = self.settings
        if self.snapshots is None:
            self.snapshots = await open_snapshots(self.nc, self.redis, settings)
        return await audit_day(
            self.redis, Keys(settings.key_prefix), self.snapshots, token, settings.partitions
        )

    async def _recount(self, partition: int, hour: int, columns: Columns, quarters: bool) -> Counted | None:
        """The hour's messages of one partition folded (with its quarter-hours when `quarters`); with
        keyed events among them, folded again together with the partition's messages of every hour
        since KEYED_LOOKBACK dedup windows before the first, whose keys may have refused them."""
        settings = self.settings
        window_ms = int(settings.dedup_window_s * 1000)
        fold = functools.partial(digest, prefix=settings.subject_prefix, partitions=settings.partitions)
        done = fold(*columns)
        first = first_keyed_ms(done, hour)
        if first is not None:
            since = first - KEYED_LOOKBACK * window_ms
            span = await read_partition_span(self.nc, settings, partition, since, columns[2][-1])
            columns = merged(columns, span.columns(partition))
            done = fold(*columns)
        counted = counted_of(done, hour, window_ms)
        if counted is None or not quarters:
            return counted
        return dataclasses.replace(counted, quarters=quarters_of(done, hour, window_ms))


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


async def hours_in_log(nc: NATS, settings: Settings) -> list[int]:
    """Every hour the log holds messages of, oldest first (one stream-info request)."""
    return sorted(await messages_per_hour(nc, settings))


async def messages_per_hour(nc: NATS, settings: Settings) -> dict[int, int]:
    """How many messages the log holds of each hour (all partitions), from one stream-info request."""
    prefix = settings.subject_prefix
    info = await nc.jetstream().stream_info(settings.stream_name, subjects_filter=f"{prefix}.>")
    hours: dict[int, int] = {}
    for subj, count in (info.state.subjects or {}).items():
        try:
            hour = parse_subject(prefix, subj)[0]
        except ValueError:
            continue
        hours[hour] = hours.get(hour, 0) + count
    return hours
