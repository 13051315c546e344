"""The one owner of the event log's JetStream configuration: `./just stream` and the start of `./just up`.

HTTP workers and projectors never create or change the stream; they only check that the partition
count recorded in its metadata is theirs.
"""

from __future__ import annotations

import logging

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, KeyValueConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from contract.hours import stream_subjects
from contract.stream import (
    DUPLICATE_WINDOW_S,
    PARTITIONS_METADATA,
    dead_letter_stream,
    dead_letter_subject,
    partition_mismatch,
    snapshot_bucket,
)
from deploy.settings import Settings

log = logging.getLogger("stream")


class PartitionMismatch(SystemExit):
    """The stream records another partition count than this process was configured with."""


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
        metadata={PARTITIONS_METADATA: str(settings.partitions)},
    )


def dead_letter_config(settings: Settings) -> StreamConfig:
    return StreamConfig(
        name=dead_letter_stream(settings.stream_name),
        description="Hourglass dead letters: stream messages or events the projector could not apply",
        subjects=[dead_letter_subject(settings.stream_name, p) for p in range(settings.partitions)],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=settings.stream_replicas,
        duplicate_window=DUPLICATE_WINDOW_S,
    )


async def ensure_stream(nc: NATS, settings: Settings, request_timeout_s: float = 5.0) -> str:
    """Create the event log and its dead-letter stream, or bring their configuration up to date.

    Refuses (PartitionMismatch) to touch a stream created with another partition count.
    """
    js = nc.jetstream(timeout=request_timeout_s)
    said = []
    for config in (stream_config(settings), dead_letter_config(settings)):
        name = config.name or ""
        try:
            info = await js.stream_info(name)
        except NotFoundError:
            await js.add_stream(config)
            said.append(f"created stream {name}")
            continue
        if name == settings.stream_name:
            problem = partition_mismatch(name, info.config.metadata, settings.partitions)
            if problem:
                raise PartitionMismatch(problem)
            # Keep metadata the server added (it records its own keys beside ours).
            config.metadata = {**(info.config.metadata or {}), **(config.metadata or {})}
        await js.update_stream(config)
        said.append(f"stream {name} is configured")
    bucket = snapshot_bucket(settings.stream_name)
    try:
        await js.key_value(bucket)
        said.append(f"snapshot bucket {bucket} is there")
    except NotFoundError:
        await js.create_key_value(
            KeyValueConfig(
                bucket=bucket,
                description="Hourglass snapshots: immutable hour entries, a manifest per partition",
                history=1,
                storage=StorageType.FILE,
                replicas=settings.stream_replicas,
            )
        )
        said.append(f"created snapshot bucket {bucket}")
    for line in said:
        log.info("%s", line)
    return "; ".join(said)


async def check_partitions(js: JetStreamContext, settings: Settings) -> None:
    """Raise PartitionMismatch when the stream was made for another partition count.

    NotFoundError means the stream does not exist yet; the caller decides whether to wait.
    """
    info = await js.stream_info(settings.stream_name)
    problem = partition_mismatch(settings.stream_name, info.config.metadata, settings.partitions)
    if problem:
        raise PartitionMismatch(problem)
