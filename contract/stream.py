"""The event log's JetStream definition, derived from settings (a description, not a connection)."""

from __future__ import annotations

from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from contract.hours import stream_subjects
from contract.settings import Settings

DUPLICATE_WINDOW_S = 120.0


def stream_config(settings: Settings) -> StreamConfig:
    return StreamConfig(
        name=settings.stream_name,
        description="Hourglass events, one subject per UTC hour and partition",
        subjects=stream_subjects(settings.subject_prefix),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=settings.stream_max_age_s or None,
        max_bytes=settings.stream_max_bytes,
        num_replicas=settings.stream_replicas,
        duplicate_window=DUPLICATE_WINDOW_S,
        allow_direct=True,
    )


def consumer_name(partition: int) -> str:
    """The durable consumer that feeds one partition's projector."""
    return f"projector-p{partition}"
