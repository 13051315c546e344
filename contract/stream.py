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
