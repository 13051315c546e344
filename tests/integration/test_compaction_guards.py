"""The compaction's guards against real servers: it never purges past a partition's snapshot manifest,
never events younger than ANALYTICS_LOG_KEEP_S, and nothing at all while a partition has no manifest."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from contract import schema
from contract.hours import subject
from contract.stream import snapshot_bucket, snapshot_manifest_key
from deploy.settings import Settings
from projector.log.compaction import Compacted, compact, nothing_audited
from projector.log.stream_config import ensure_stream
from projector.projections.snapshots import Snapshots, open_snapshots
from tests.conftest import Server
from tests.helpers import isolated_settings

HOUR = 494_000
LATER_MS = 60_000
"""A clock this long after the last event: a keep period of 0 holds nothing back."""


async def stream_with(nc: NATS, settings: Settings, messages: int) -> list[int]:
    """A stream of `messages` messages over both partitions; returns their stored times in ms."""
    await ensure_stream(nc, settings)
    js = nc.jetstream()
    stored = []
    for i in range(messages):
        await asyncio.sleep(0.003)  # distinct milliseconds, so a cut by time falls between two messages
        batch = schema.encode(
            schema.batch_of(events=(schema.Event(HOUR * 3_600_000, f"u{i}", schema.Kind.CLICK),))
        )
        ack = await js.publish(
            subject(settings.subject_prefix, HOUR, i % 2), batch, stream=settings.stream_name
        )
        found = await js.get_msg(settings.stream_name, ack.seq)
        assert found.seq == ack.seq
        assert found.time is not None
        stored.append(int(found.time.timestamp() * 1000))
    return stored


async def cut(nc: NATS, settings: Settings, marks: dict[int, int]) -> Snapshots:
    """Manifests at these watermarks, as the snapshot writer leaves them."""
    kv = await nc.jetstream().key_value(snapshot_bucket(settings.stream_name))
    for partition, watermark in marks.items():
        manifest = schema.Manifest(watermark=watermark, hours={}, dedup=watermark)
        await kv.put(snapshot_manifest_key(partition), schema.pack(manifest))
    return await snapshots_of(nc, settings)


async def snapshots_of(nc: NATS, settings: Settings) -> Snapshots:
    found = await open_snapshots(nc, REDIS[0], settings)
    assert found is not None
    return found


async def first_seq(nc: NATS, settings: Settings) -> int:
    return int((await nc.jetstream().stream_info(settings.stream_name)).state.first_seq)


REDIS: list[Redis] = []


async def compacted(nc: NATS, settings: Settings, snapshots: Snapshots, now_ms: int) -> Compacted | None:
    """What the live projector does (no audit in these tests)."""
    return await compact(nc, settings, await snapshots.covered(settings.partitions), now_ms, nothing_audited)


def two_partitions(nats_server: Server, redis_server: Server, **overrides: object) -> Settings:
    return isolated_settings(nats_server.url, redis_server.url, partitions=2, **overrides)


async def test_compaction_never_purges_past_the_lowest_snapshot_manifest(
    nats_server: Server, redis_server: Server, nc: NATS, redis: Redis
) -> None:
    REDIS[:] = [redis]
    settings = two_partitions(nats_server, redis_server, log_keep_s=0)
    stored = await stream_with(nc, settings, 10)
    now = stored[-1] + LATER_MS
    snapshots = await cut(nc, settings, {0: 8, 1: 5})
    done = await compacted(nc, settings, snapshots, now)
    assert done is not None
    assert done.covered == 5
    # Partition 1's cut covers seq 5 only: seq 6 on must stay, for partition 1 and for everyone.
    assert await first_seq(nc, settings) == 6
    assert await compacted(nc, settings, snapshots, now) is None, "nothing more may go"


async def test_compaction_never_purges_events_younger_than_the_keep_period(
    nats_server: Server, redis_server: Server, nc: NATS, redis: Redis
) -> None:
    REDIS[:] = [redis]
    settings = two_partitions(nats_server, redis_server, log_keep_s=3600)
    stored = await stream_with(nc, settings, 10)
    snapshots = await cut(nc, settings, {0: 10, 1: 10})
    # Just now: every event is younger than an hour, so none goes although the snapshots cover them all.
    assert await compacted(nc, settings, snapshots, stored[-1] + 1) is None
    assert await first_seq(nc, settings) == 1
    # An hour after the 4th event was stored: the first three are older than the keep period, it is not.
    done = await compacted(nc, settings, snapshots, stored[3] + 3_600_000)
    assert done is not None
    assert await first_seq(nc, settings) == 4


async def test_compaction_purges_nothing_while_a_partition_has_no_manifest(
    nats_server: Server, redis_server: Server, nc: NATS, redis: Redis
) -> None:
    REDIS[:] = [redis]
    settings = two_partitions(nats_server, redis_server, log_keep_s=0)
    stored = await stream_with(nc, settings, 6)
    now = stored[-1] + LATER_MS
    snapshots = await cut(nc, settings, {0: 6})
    assert await compacted(nc, settings, snapshots, now) is None
    assert await first_seq(nc, settings) == 1, "a partition without a cut needs its whole log"
    await cut(nc, settings, {1: 6})
    assert await compacted(nc, settings, snapshots, now) is not None
    assert await first_seq(nc, settings) == 7
