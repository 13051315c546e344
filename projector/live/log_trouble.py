"""What a partition worker does when the log no longer holds what its watermark says: events that
retention dropped before they were applied, or a log that went back below what was applied."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from projector import metrics
from projector.projections.store import ProjectionStore

log = logging.getLogger("projector")

REWIND_CONFIRM_S = 30.0
"""How long the stream must end below a partition's watermark before that is taken as a loss: a
nats-server just restarted, or a new stream leader still catching up, can report a shorter stream for
a while (seen in docs/faults.md's power-loss schedules), and acting on that would drop counts."""


class LogBehind(Exception):
    """The stream ends below the watermark, not yet for REWIND_CONFIRM_S: the worker retries."""


@dataclass
class RewindWatch:
    """Tells a stream that lost applied messages from one that reports less for a while."""

    clock: Callable[[], float] = time.monotonic
    since: float | None = None

    def lost(self, partition: int, watermark: int, last: int) -> bool:
        """True once the stream has ended below the watermark for REWIND_CONFIRM_S; before that,
        LogBehind; False (and forgotten) when it does not."""
        if watermark <= last:
            self.since = None
            return False
        now = self.clock()
        self.since = now if self.since is None else self.since
        if now - self.since < REWIND_CONFIRM_S:
            raise LogBehind(
                f"p{partition}: the stream ends at seq {last}, below the watermark {watermark}; "
                f"waiting up to {REWIND_CONFIRM_S:.0f} s for it to catch up before taking it as lost"
            )
        self.since = None
        return True


async def retention_gap(store: ProjectionStore, gen: int, partition: int, watermark: int, first: int) -> None:
    """Events of this partition may have been dropped by retention before they were applied.
    Never continue quietly: the alarm stays (on `/readyz`) for the rest of this generation."""
    why = (
        f"retention dropped stream seqs {watermark + 1}..{first - 1} before they were applied "
        f"(watermark {watermark}, the stream starts at {first}); counts may miss those events. "
        "./just replay rebuilds from what the log still holds and clears this"
    )
    metrics.RETENTION_GAPS.labels(str(partition)).inc()
    log.error("p%d: %s", partition, why)
    await store.record_gap(gen, partition, why)


async def log_rewound(
    store: ProjectionStore, gen: int, partition: int, watermark: int, last: int, phases: tuple[int, ...]
) -> None:
    """The stream ends below the watermark: it lost messages after they were applied (every node's OS
    crashed under the default sync_interval, docs/faults.md). New events get those sequence numbers
    again, and which of them were applied cannot be told, so the partition is dropped and the caller
    rebuilds it from the log: its counts equal the log again and no new event is skipped. The alarm
    stays for the rest of the generation."""
    why = (
        f"the stream ends at seq {last} but stream seqs up to {watermark} were applied: the log lost "
        "acknowledged messages (an OS crash of every node with nats-server's default sync_interval?). "
        "The partition was rebuilt from what the log holds: the events it lost are no longer counted. "
        "./just replay clears this"
    )
    metrics.LOG_REWINDS.labels(str(partition)).inc()
    log.error("p%d: %s", partition, why)
    await store.drop_generation(gen, [partition])
    await store.record_phases(gen, partition, phases)
    await store.record_gap(gen, partition, why)
