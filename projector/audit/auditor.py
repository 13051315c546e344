"""Audits hours: each hour's served value (and its quarter-hours') read with its watermarks, then its log
messages up to them recounted with the projector's fold and compared, partition by partition; and the
day rollups holding them against their components."""

from __future__ import annotations

import bisect
import dataclasses
import logging
from dataclasses import dataclass

from nats.aio.client import Client as NATS

from contract.hours import parse_subject
from contract.keys import Keys
from deploy.projections_client import ProjectionsClient
from deploy.settings import Settings
from projector.audit.served import audit_day, days_overlapping, read_served
from projector.audit.verdict import (
    Counted,
    DayAudit,
    HourAudit,
    PartitionAudit,
    axes_of,
    compare,
    counted_of,
    quarters_of,
)
from projector.log.hour_log import Columns, keyed_span, read_hour_log
from projector.projections.snapshots import Snapshots, open_snapshots

log = logging.getLogger("audit")


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
            mine = served[p].counted
            counted = await self._recount(p, hour, columns, bool(mine.quarters), mine.axes is not None)
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

    async def _recount(
        self, partition: int, hour: int, columns: Columns, quarters: bool, axes: bool
    ) -> Counted | None:
        """The hour's messages of one partition folded (with its quarter-hours when `quarters`, its axis
        cells when `axes`); with keyed events among them, folded again together with the messages that
        lend them their keys (`keyed_span`, what a single-hour replay folds too)."""
        settings = self.settings
        window_ms = int(settings.dedup_window_s * 1000)
        span = await keyed_span(self.nc, settings, partition, hour, columns)
        done = span.digest
        counted = counted_of(done, hour, window_ms)
        if counted is None:
            return None
        if quarters:
            counted = dataclasses.replace(counted, quarters=quarters_of(done, hour, window_ms))
        if axes:
            kept = axes_of(done, hour, window_ms, settings.dimension_max_values)
            counted = dataclasses.replace(counted, axes=kept)
        return counted


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
