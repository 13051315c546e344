"""Prometheus metrics of a projector process, served on ANALYTICS_PROJECTOR_METRICS_PORT."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from projector.fold.deltas import Deltas

APPLY_SECONDS = Histogram(
    "hourglass_projector_apply_seconds",
    "Duration of one atomic apply (deltas + watermark) in Redis",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
APPLIED_EVENTS = Counter("hourglass_projector_events_applied", "Events folded into Redis by this process")
APPLIED_SEQ = Gauge(
    "hourglass_projector_applied_seq", "Last stream sequence this process applied", ["partition"]
)

CONSUMER_LAG = Gauge(
    "hourglass_consumer_lag",
    "Messages of the partition in the stream that this process has not received yet (at its last fetch)",
    ["partition"],
)
SNAPSHOT_SEQ = Gauge(
    "hourglass_projector_snapshot_seq",
    "Watermark of the partition's last snapshot this process wrote",
    ["partition"],
)
SNAPSHOT_TIME = Gauge(
    "hourglass_projector_snapshot_time_seconds",
    "Unix time of the partition's last snapshot this process wrote (its age: time() - this)",
    ["partition"],
)
COMPACTED_SEQ = Gauge(
    "hourglass_projector_compacted_seq", "The stream's first sequence after this process's last compaction"
)
EVICTED = Counter(
    "hourglass_projector_hours_evicted",
    "Hour-partitions moved out of Redis (older than ANALYTICS_HOT_HOURS and snapshotted)",
)
THAWED = Counter(
    "hourglass_projector_hours_thawed",
    "Cold hour-partitions brought back into Redis from the snapshot store for late events",
)
RESTORES = Counter(
    "hourglass_projector_restores", "Partitions restored from a snapshot after Redis lost them"
)
ROLLBACKS = Counter(
    "hourglass_projector_rollbacks",
    "Times a partition's watermark in Redis was found below the one this process had applied, or below "
    "its consumer's ack floor (a failover promoted a replica that lacked the last applies): the partition "
    "is re-applied from the log",
    ["partition"],
)
WAIT_SHORT = Counter(
    "hourglass_projector_wait_short",
    "Applies whose WAIT (ANALYTICS_REDIS_WAIT_REPLICAS) timed out before enough replicas acknowledged them",
)
DEAD_LETTERS = Counter(
    "hourglass_projector_dead_letters",
    "Stream messages or events this process filed in the dead-letter stream instead of applying",
)
STALLED_AT = Gauge(
    "hourglass_projector_stalled_seq",
    "Stream sequence a partition is stopped in front of (unknown schema version); 0 when applying",
    ["partition"],
)
ERRORS = Counter(
    "hourglass_projector_errors",
    "Unexpected exceptions in a partition worker (logged with traceback)",
    ["partition"],
)
REDIS_OOM = Counter("hourglass_projector_redis_oom", "Applies refused by Redis for lack of memory (retried)")
RETENTION_GAPS = Counter(
    "hourglass_projector_retention_gaps",
    "Times a partition found events dropped by retention before they were applied",
    ["partition"],
)
LOG_REWINDS = Counter(
    "hourglass_projector_log_rewinds",
    "Times a partition found the stream ending below its watermark: the log lost applied messages",
    ["partition"],
)
PULL_READER_FALLBACK = Gauge(
    "hourglass_projector_pull_reader_fallback",
    "1 when this process reads the log through nats-py's public API (its internals the fast reader hooks "
    "are missing, or ANALYTICS_PULL_READER=public); 0 with the fast reader",
)

LATE_EVENTS = Counter(
    "hourglass_projector_late_events",
    "Events folded into an hour before the current one, by how old the hour was",
    ["age"],
)
_AGES = ((1, "1h"), (24, "1d"), (168, "7d"), (720, "30d"))


def count_late(deltas: Deltas, current_hour: int) -> None:
    """Events of past hours, by the hour's age: `1h` the previous hour, `1d` within a day, and so on."""
    events = {hour: delta.clicks + delta.impressions for hour, delta in deltas.hours.items()}
    for keyed in deltas.keyed:
        events[keyed.hour] += 1  # a refused retry included: it arrived late all the same
    for hour, n in events.items():
        age = current_hour - hour
        if age > 0 and n:
            LATE_EVENTS.labels(next((name for limit, name in _AGES if age <= limit), "older")).inc(n)


def serve(port: int) -> None:
    """Metrics are worth less than projecting: a port that is taken is logged, not fatal."""
    if not port:
        return
    try:
        start_http_server(port, addr="127.0.0.1")
    except OSError as exc:
        logging.getLogger("projector").error(
            "metrics port %d unavailable (%s); serving no metrics", port, exc
        )


DIMENSION_OVERFLOW = Counter(
    "hourglass_projector_dimension_values_over_bound",
    "New dimension values counted as (other): their hour and partition had ANALYTICS_DIMENSION_MAX_VALUES",
    ["dimension"],
)
