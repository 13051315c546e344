"""Replays that cannot be done as asked: a batch of an unknown schema version, a log compacted past its
snapshots, a replay killed mid-build. Each leaves the live generation as it was, and drops what it built;
and a replay never files a dead letter the live path filed already."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from api.reader import HourTotals, Reader
from contract import schema
from contract.hours import HOUR_MS, partition_of, subject
from contract.keys import Keys
from contract.stream import dead_letter_stream
from deploy.servers import ROOT
from deploy.settings import Settings
from projector.fold.deltas import Deltas, HourDelta
from projector.log.stream_config import ensure_stream
from projector.projections.store import ProjectionStore
from projector.replay import partition_fold
from projector.replay.driver import replay
from projector.replay.reports import ReplayRefused
from tests.conftest import Server
from tests.helpers import eventually, isolated_settings, settings_env
from tests.integration.conftest import Projectors

HOUR = 495_000
TS = HOUR * HOUR_MS + 1
EXPECTED = HourTotals(unique_users=4, clicks=4, impressions=0)


@pytest.fixture
def settings(nats_server: Server, redis_server: Server) -> Settings:
    return isolated_settings(nats_server.url, redis_server.url, partitions=2)


def user_in(partition: int, settings: Settings, tag: str) -> str:
    return next(
        f"{tag}{i}" for i in range(1000) if partition_of(f"{tag}{i}", settings.partitions) == partition
    )


async def publish(nc: NATS, settings: Settings, partition: int, payload: bytes) -> int:
    where = subject(settings.subject_prefix, HOUR, partition)
    return (await nc.jetstream().publish(where, payload, stream=settings.stream_name)).seq


async def live_log(nc: NATS, redis: Redis, settings: Settings) -> ProjectionStore:
    """Two clicks in each partition, replayed once, so a live generation holds them."""
    await ensure_stream(nc, settings)
    for p in range(settings.partitions):
        for tag in ("a", "b"):
            click = schema.Event(TS, user_in(p, settings, tag), schema.Kind.CLICK)
            await publish(nc, settings, p, schema.encode(schema.batch_of(events=(click,))))
    await replay(settings, nc, redis)
    assert await hour(redis, settings) == EXPECTED
    return ProjectionStore.from_settings(redis, settings)


async def hour(redis: Redis, settings: Settings) -> HourTotals:
    return await Reader(redis, Keys(settings.key_prefix), settings.partitions).hour(HOUR)


async def generations_in_redis(redis: Redis, settings: Settings) -> set[int]:
    keys = Keys(settings.key_prefix)
    found = set()
    for p in range(settings.partitions):
        head = keys.gen_prefix(p)
        async for raw in redis.scan_iter(match=f"{head}*"):
            token = raw.decode()[len(head) :].partition(":")[0]
            if token.isdigit():
                found.add(int(token))
    return found


async def test_a_replay_meeting_an_unknown_schema_version_stops_names_it_and_drops_what_it_built(
    settings: Settings, nc: NATS, redis: Redis
) -> None:
    store = await live_log(nc, redis, settings)
    live = await store.live_generation(0)
    # Partition 0 folds a good batch into the new generation, then meets version 99.
    click = schema.Event(TS, user_in(0, settings, "c"), schema.Kind.CLICK)
    await publish(nc, settings, 0, schema.encode(schema.batch_of(events=(click,))))
    newer = msgspec.json.encode({"v": 99, "events": [[TS, user_in(0, settings, "d"), "click", None]]})
    seq = await publish(nc, settings, 0, newer)
    proc = subprocess.run(
        [sys.executable, "-m", "projector", "replay"],
        env=settings_env(settings),
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    said = proc.stderr.decode()
    assert proc.returncode != 0, said
    assert "replay refused" in said
    assert f"stream seq {seq}: unknown schema version 99" in said
    assert "Traceback" not in said
    assert await store.live_generation(0) == live, "the live generation is still live"
    assert await generations_in_redis(redis, settings) == {live}, "the half-built generation is gone"
    assert live is not None
    assert await store.last_generation_handed_out() > live
    assert await hour(redis, settings) == EXPECTED


async def test_a_replay_refuses_when_the_snapshots_do_not_reach_the_start_of_the_compacted_log(
    settings: Settings, nc: NATS, redis: Redis
) -> None:
    store = await live_log(nc, redis, settings)
    live = await store.live_generation(0)
    await nc.jetstream().purge_stream(settings.stream_name, seq=3)  # as compaction would, with no cut
    with pytest.raises(ReplayRefused, match="the log starts at stream seq 3"):
        await replay(settings, nc, redis)
    assert await store.live_generation(0) == live
    assert await generations_in_redis(redis, settings) == {live}
    assert await hour(redis, settings) == EXPECTED


async def test_the_next_replay_drops_what_a_killed_replay_left_half_built(
    settings: Settings, nc: NATS, redis: Redis
) -> None:
    store = await live_log(nc, redis, settings)
    # What a replay killed mid-build leaves: a generation handed out and partly written, never live.
    orphan = await store.new_generation()
    half = Deltas(hours={HOUR: HourDelta.of({"ghost"}, 7, 0)}, last_seq=1)
    await store.apply(orphan, 0, 0, half, live=False)
    assert orphan in await generations_in_redis(redis, settings)
    await replay(settings, nc, redis)
    live = await store.live_generation(0)
    assert await generations_in_redis(redis, settings) == {live}
    assert live is not None
    assert live > orphan
    assert await hour(redis, settings) == EXPECTED


async def test_a_replay_files_no_second_dead_letter_for_what_the_live_path_filed(
    settings: Settings, nc: NATS, redis: Redis
) -> None:
    await ensure_stream(nc, settings)
    good = user_in(0, settings, "g")
    wrong_hour = schema.Event(TS - HOUR_MS, good, schema.Kind.CLICK)  # another hour than its subject's
    batch = schema.batch_of(events=(schema.Event(TS, good, schema.Kind.CLICK), wrong_hour))
    seq = await publish(nc, settings, 0, schema.encode(batch))
    projectors = Projectors(settings, redis)
    await projectors.start()
    try:
        await eventually(lambda: dead_letters(nc, settings), lambda n: n == 1)
        keys = Keys(settings.key_prefix)
        store = ProjectionStore.from_settings(redis, settings)
        gen = await store.current_generation(0)
        await eventually(lambda: store.watermark(gen, 0), lambda wm: wm >= seq)
    finally:
        await projectors.stop_all()
    await replay(settings, nc, redis)
    assert await dead_letters(nc, settings) == 1
    # The live path files a dead letter before its apply: a crash in between leaves the watermark
    # below it, so the replay files it again, under the same message id, and JetStream drops it.
    gen = await store.current_generation(0)
    await redis.set(keys.watermark(gen, 0), 0)
    await replay(settings, nc, redis)
    assert await dead_letters(nc, settings) == 1
    assert await hour(redis, settings) == HourTotals(unique_users=1, clicks=1, impressions=0)


async def dead_letters(nc: NATS, settings: Settings) -> int:
    info = await nc.jetstream().stream_info(dead_letter_stream(settings.stream_name))
    return int(info.state.messages)


class DeletesItsConsumer(ProjectionStore):
    """A store whose first apply deletes the stream's consumers: the replay's read loses its consumer
    mid-read, as readers of a JetStream server cut off from its peers do."""

    nc: NATS | None = None
    stream = ""

    async def apply(self, *args: Any, **kwargs: Any) -> Any:
        if self.nc is not None:
            js, self.nc = self.nc.jetstream(), None
            for info in await js.consumers_info(self.stream):
                await js.delete_consumer(self.stream, info.name)
        return await super().apply(*args, **kwargs)


async def test_a_replay_whose_consumer_goes_away_reads_on_through_a_fresh_one_each_message_once(
    nc: NATS, redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full replay in the container cluster stack was refused ("replay stalled with 74 messages
    left") when its consumer went quiet; a fresh consumer now takes over from the next sequence."""
    await ensure_stream(nc, settings)
    users = [f"t{i}" for i in range(400) if partition_of(f"t{i}", settings.partitions) == 0][:30]
    for user in users:
        click = schema.Event(TS, user, schema.Kind.CLICK)
        await publish(nc, settings, 0, schema.encode(schema.batch_of(events=(click,))))
    monkeypatch.setattr(partition_fold, "REPLAY_FETCH", 10)  # several fetches: the loss falls mid-read
    store = DeletesItsConsumer.from_settings(redis, settings)
    assert isinstance(store, DeletesItsConsumer)
    store.nc, store.stream = nc, settings.stream_name
    built = await partition_fold.fold_partition(settings, nc, store, 1, 0, dead_letter_above=10**9)
    assert (built.messages, built.events) == (len(users), len(users))
    assert await hour(redis, settings) == HourTotals(len(users), len(users), 0)
