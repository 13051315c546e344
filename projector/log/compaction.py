"""The compacted log: the stream is purged below what every partition's snapshot covers, but raw events
younger than ANALYTICS_LOG_KEEP_S always stay, and (with ANALYTICS_AUDIT_ENABLED) so do the events of
every hour the audit has not audited yet.

Its caller passes both what the snapshots cover and how to ask the audit how far it got, so the log
imports neither the projections nor the audit.

Any projector may run it (a purge only ever moves the stream's first sequence forward). It never
passes a durable manifest, so the stream plus the snapshots always hold every event: a restore, or a
replay, gets every hour exactly.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contract.hours import HOUR_MS, stream_subjects
from deploy.settings import Settings

log = logging.getLogger("projector")

AuditedThrough = Callable[[], Awaitable[int | None]]
"""Asks the audit's records for the hour through which every hour was audited (None: none yet)."""


async def nothing_audited() -> int | None:
    """What compaction hears when its caller names no audit records: no hour audited yet, so with
    ANALYTICS_AUDIT_ENABLED nothing goes."""
    return None


@dataclass(frozen=True, slots=True)
class Compacted:
    first_seq: int
    """The stream's first sequence after the purge."""
    covered: int
    """The lowest snapshot watermark over the partitions."""


async def compact(
    nc: NATS, settings: Settings, covered: int | None, now_ms: int, audited_through: AuditedThrough
) -> Compacted | None:
    """Purge what the snapshots, the keep period and the audit allow; None when nothing may go yet.
    `covered`: the lowest snapshot watermark over the partitions (None: a partition has no cut yet);
    `audited_through` is asked only with ANALYTICS_AUDIT_ENABLED."""
    if covered is None:
        return None  # a partition without a cut needs its whole log
    js = nc.jetstream()
    state = (await js.stream_info(settings.stream_name)).state
    keep_from = await _first_seq_since(nc, settings, now_ms - int(settings.log_keep_s * 1000), state.last_seq)
    upto = min(covered + 1, keep_from)
    if settings.audit_enabled:
        through = await audited_through()
        if through is None:
            return None  # no hour audited yet: every event may still be recounted
        # A message stored before this moment holds no event of an hour after `through` (a POST may
        # be at most ANALYTICS_FUTURE_SKEW_MS ahead), so it may go once snapshots and keep allow.
        audited = (through + 1) * HOUR_MS - settings.future_skew_ms
        upto = min(upto, await _first_seq_since(nc, settings, audited, state.last_seq))
    if upto <= state.first_seq:
        return None
    await js.purge_stream(settings.stream_name, seq=upto)  # removes every message below `upto`
    log.info(
        "compacted the log: stream now starts at seq %d (snapshots cover up to %d; events of the last "
        "%.0fs are kept)",
        upto,
        covered,
        settings.log_keep_s,
    )
    return Compacted(upto, covered)


async def _first_seq_since(nc: NATS, settings: Settings, since_ms: int, last_seq: int) -> int:
    """The first stream sequence stored at or after `since_ms` (last_seq + 1 when there is none)."""
    js = nc.jetstream()
    start = dt.datetime.fromtimestamp(max(since_ms, 0) / 1000, tz=dt.UTC)
    sub = await js.pull_subscribe(
        stream_subjects(settings.subject_prefix)[0],
        stream=settings.stream_name,
        config=ConsumerConfig(
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=start,
            inactive_threshold=10.0,
        ),
    )
    try:
        pending = (await sub.consumer_info()).num_pending or 0
    finally:
        await sub.unsubscribe()
    return last_seq - pending + 1
