"""Names and facts about the event log that every process must agree on (plain values, no client library)."""

from __future__ import annotations

from collections.abc import Mapping

PARTITIONS_METADATA = "hourglass_partitions"
"""Stream metadata key recording the partition count the stream was created with."""

DUPLICATE_WINDOW_S = 120.0


def consumer_name(partition: int) -> str:
    """The durable consumer that feeds one partition's projector."""
    return f"projector-p{partition}"


def dead_letter_stream(stream_name: str) -> str:
    """Where the projector puts messages and events it cannot apply, so nothing is skipped silently."""
    return f"{stream_name}_DEAD"


def dead_letter_subject(stream_name: str, partition: int) -> str:
    """Outside every event subject: settings refuse a subject prefix under `hourglass.`."""
    return f"hourglass.dead.{stream_name}.{partition}"


def partition_mismatch(stream_name: str, metadata: Mapping[str, str] | None, configured: int) -> str | None:
    """Why a process configured with `configured` partitions must not touch this stream, or None."""
    recorded = (metadata or {}).get(PARTITIONS_METADATA)
    if recorded is None or recorded == str(configured):
        return None
    return (
        f"stream {stream_name} was created with {recorded} partitions, but ANALYTICS_PARTITIONS is "
        f"{configured}; the partition count is fixed for the life of a stream"
    )


def snapshot_bucket(stream_name: str) -> str:
    """The JetStream key-value bucket that holds the projections' snapshots."""
    return f"{stream_name}_SNAPSHOTS"


def snapshot_manifest_key(partition: int) -> str:
    """The partition's manifest: its watermark and which entry holds each hour. Written last."""
    return f"p{partition}.manifest"


def snapshot_hour_key(partition: int, hour_token: str, watermark: int) -> str:
    """One hour of one partition as it was at `watermark`; never overwritten."""
    return f"p{partition}.h{hour_token}.w{watermark}"


def snapshot_dedup_key(partition: int, watermark: int) -> str:
    """The partition's idempotency entries inside the window, as they were at `watermark`."""
    return f"p{partition}.dedup.w{watermark}"
