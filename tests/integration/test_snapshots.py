"""Snapshots in JetStream KV: a wiped Redis comes back from the last cut plus the tail, exactly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import KeyNotFoundError
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from api.reader import HourTotals, Reader
from contract import schema
from contract.cells import Cell, CellLayout
from contract.hours import HOUR_MS, hour_token, partition_of, subject
from contract.keys import Keys
from contract.stream import snapshot_bucket, snapshot_manifest_key
from deploy.servers import ROOT
from deploy.settings import Settings
from projector.log.stream_config import ensure_stream
from projector.projections.snapshots import open_snapshots
from projector.replay.driver import replay
from projector.replay.single_hour import replay_hour
from tests.conftest import Server
from tests.helpers import eventually, isolated_settings, settings_env
from tests.integration.conftest import Projectors, production_stack, scoped_settings, with_roles

BASE = 493_000


@pytest.fixture
def settings(nats_server: Server, redis_server: Server) -> Settings:
    return isolated_settings(nats_server.url, redis_server.url, snapshot_interval_s=0.2)


async def totals(redis: Redis, settings: Settings, hours: range) -> list[HourTotals]:
    reader = Reader(redis, Keys(settings.key_prefix), settings.partitions)
    return [await reader.hour(h) for h in hours]


async def snapshot_marks(nc: NATS, settings: Settings) -> dict[int, int]:
    kv = await nc.jetstream().key_value(snapshot_bucket(settings.stream_name))
    marks = {}
    for p in range(settings.partitions):
        try:
            entry = await kv.get(snapshot_manifest_key(p))
        except KeyNotFoundError:
            continue  # no manifest for this partition yet; any other failure fails the test
        marks[p] = schema.unpack_manifest(entry.value or b"").watermark
    return marks


async def redis_marks(redis: Redis, settings: Settings) -> dict[int, int]:
    keys = Keys(settings.key_prefix)
    values = []
    for p in range(settings.partitions):
        gen = keys.live_generation(await redis.get(keys.generation(p)))
        values.append(await redis.get(keys.watermark(gen, p)))
    return {p: int(v) for p, v in enumerate(values) if v is not None}


async def wipe(redis: Redis, settings: Settings) -> None:
    keys = [k async for k in redis.scan_iter(match=f"{settings.key_prefix}:*")]
    if keys:
        await redis.delete(*keys)


async def test_a_wiped_redis_comes_back_from_the_snapshot_and_the_tail_even_without_the_log(
    client: httpx.AsyncClient, nc: NATS, redis: Redis, settings: Settings, projectors: Projectors
) -> None:
    await projectors.start()
    hours = range(BASE, BASE + 3)
    for i in range(30):
        hour = hours[i % 3]
        assert (
            await client.post(f"/analytics?timestamp={hour * HOUR_MS}&user=u{i % 7}&click")
        ).status_code == 204
    key = {"Idempotency-Key": "order-1"}
    assert (
        await client.post(f"/analytics?timestamp={BASE * HOUR_MS}&user=k&impression", headers=key)
    ).status_code == 204
    await eventually(lambda: totals(redis, settings, hours), lambda t: sum(x.clicks for x in t) == 30)
    # Every partition's snapshot catches up with what Redis applied.
    await eventually(
        lambda: asyncio.gather(snapshot_marks(nc, settings), redis_marks(redis, settings)),
        lambda both: both[0] == both[1] and len(both[0]) == settings.partitions,
    )
    cut = min((await snapshot_marks(nc, settings)).values())
    for i in range(6):  # the tail: after the snapshots
        assert (
            await client.post(f"/analytics?timestamp={BASE * HOUR_MS}&user=t{i}&impression")
        ).status_code == 204
    before = await eventually(lambda: totals(redis, settings, hours), lambda t: t[0].impressions == 7)

    # The log before the cut is gone (as a compaction would do), then Redis loses everything.
    await nc.jetstream().purge_stream(settings.stream_name, seq=cut + 1)
    restores = REGISTRY.get_sample_value("hourglass_projector_restores_total") or 0
    await wipe(redis, settings)
    after = await eventually(lambda: totals(redis, settings, hours), lambda t: t == before, timeout=30)
    assert after == before
    assert (REGISTRY.get_sample_value("hourglass_projector_restores_total") or 0) > restores

    # The idempotency entries came back too: the retry still counts once.
    assert (
        await client.post(f"/analytics?timestamp={BASE * HOUR_MS}&user=k&impression", headers=key)
    ).status_code == 204
    # The marker is k's too: in the retry's partition, after it, so applied only after the retry.
    assert (await client.post(f"/analytics?timestamp={BASE * HOUR_MS}&user=k&click")).status_code == 204
    await eventually(lambda: totals(redis, settings, hours), lambda t: t[0].clicks == before[0].clicks + 1)
    final = await totals(redis, settings, hours)
    assert final[0] == HourTotals(before[0].unique_users, before[0].clicks + 1, before[0].impressions)
    assert final[1:] == before[1:]


async def test_a_projector_killed_while_snapshotting_never_leaves_a_cut_that_miscounts(
    client: httpx.AsyncClient,
    nc: NATS,
    redis: Redis,
    settings: Settings,
    tmp_path: Path,
    projectors: Projectors,
) -> None:
    # Many hours make the first snapshot long enough to be killed in the middle of it.
    js = nc.jetstream()
    hours = range(BASE, BASE + 480)
    for hour in hours:
        for p in range(settings.partitions):
            user = next(
                f"h{hour}-{i}" for i in range(100) if partition_of(f"h{hour}-{i}", settings.partitions) == p
            )
            batch = schema.batch_of(events=(schema.Event(hour * HOUR_MS, user, schema.Kind.CLICK),))
            await js.publish(subject(settings.subject_prefix, hour, p), schema.encode(batch))
    env = settings_env(settings.replace(snapshot_interval_s=0.05))
    log = (tmp_path / "projector.log").open("ab")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "projector", "run", env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        # Kill while the partitions are being snapshotted: hour entries written, not every manifest.
        kv = await js.key_value(snapshot_bucket(settings.stream_name))

        # One watcher, not a kv.keys() poll: each poll opens a consumer, and on a loaded machine
        # a 1 ms poll once met "maximum consumers limit reached".
        watcher = await kv.watchall()
        names: set[str] = set()

        async def midway() -> None:
            async for entry in watcher:
                names.add(entry.key if entry is not None else "")
                manifests = sum(name.endswith(".manifest") for name in names)
                if manifests < settings.partitions and any(".h" in name for name in names):
                    return

        try:
            await asyncio.wait_for(midway(), timeout=60)
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves it unannotated
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
    marks = await snapshot_marks(nc, settings)
    await wipe(redis, settings)
    restores = REGISTRY.get_sample_value("hourglass_projector_restores_total") or 0
    await projectors.start()
    expected = [HourTotals(4, 4, 0)] * len(hours)
    assert (
        await eventually(lambda: totals(redis, settings, hours), lambda t: t == expected, timeout=60)
        == expected
    )
    # The partitions whose manifest was written came back from it, and only they; the others from the log.
    assert (REGISTRY.get_sample_value("hourglass_projector_restores_total") or 0) - restores == len(marks)


async def test_inspect_shows_the_stream_its_subjects_consumers_snapshots_and_last_events(
    client: httpx.AsyncClient, nc: NATS, redis: Redis, settings: Settings, projectors: Projectors
) -> None:
    await projectors.start()
    assert (await client.post(f"/analytics?timestamp={BASE * HOUR_MS}&user=seen&click")).status_code == 204
    await eventually(lambda: snapshot_marks(nc, settings), lambda m: len(m) >= 1)
    shown = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "projector", "inspect", env=settings_env(settings), cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await shown.communicate()
    text = out.decode()
    assert shown.returncode == 0, err.decode()
    assert f"stream {settings.stream_name}: 1 messages" in text
    assert f"{settings.subject_prefix}.2026032916." in text  # the hour subject of BASE
    assert "projector-p0" in text
    assert "at stream seq 1, 1 hours, 1 day rollups" in text
    assert "click      user='seen'" in text


@pytest.fixture
def compacting(own_nats: Server, own_redis: Server) -> Settings:
    return scoped_settings(own_nats, own_redis, snapshot_interval_s=0.2, log_keep_s=0.5)


async def test_the_compacted_log_with_its_snapshots_keeps_every_answer_through_wipe_and_replays(
    compacting: Settings, own_nats: Server, own_redis: Server
) -> None:
    # The projector snapshots and compacts as `projector`; the HTTP process is `ingest` and `api`.
    nc = await nats.connect(own_nats.url)
    redis = Redis.from_url(own_redis.url)
    try:
        roles = with_roles(compacting, own_nats, own_redis)
        async for http in production_stack(compacting, roles=roles):
            await compacted_scenario(http, compacting, nc, redis)
    finally:
        await nc.close()
        await redis.aclose()


async def compacted_scenario(http: httpx.AsyncClient, settings: Settings, nc: NATS, redis: Redis) -> None:
    hours = range(BASE, BASE + 3)
    for i in range(24):
        kind = "click" if i % 2 else "impression"
        path = f"/analytics?timestamp={hours[i % 3] * HOUR_MS}&user=c{i % 5}&{kind}"
        assert (await http.post(path)).status_code == 204
    key = {"Idempotency-Key": "once"}
    assert (
        await http.post(f"/analytics?timestamp={BASE * HOUR_MS}&user=k&click", headers=key)
    ).status_code == 204
    expected = await eventually(
        lambda: totals(redis, settings, hours), lambda t: sum(x.clicks for x in t) == 13
    )
    js = nc.jetstream()
    # Every partition snapshotted, the keep period passed: the log is purged below the snapshots.
    await eventually(
        lambda: js.stream_info(settings.stream_name), lambda i: i.state.first_seq > 1, timeout=30
    )

    await wipe(redis, settings)
    assert await eventually(lambda: totals(redis, settings, hours), lambda t: t == expected) == expected

    report = await replay(settings, nc, redis)
    assert await totals(redis, settings, hours) == expected
    assert report.generation >= 2

    await replay_hour(settings, nc, redis, BASE)
    assert await totals(redis, settings, hours) == expected

    # A late event for a compacted hour adds to it; a retry of a key from before the cut does not.
    assert (await http.post(f"/analytics?timestamp={BASE * HOUR_MS}&user=late&click")).status_code == 204
    assert (
        await http.post(f"/analytics?timestamp={BASE * HOUR_MS}&user=k&click", headers=key)
    ).status_code == 204
    # A marker in the retry's partition, after it: once it is applied, so is the retry.
    marker = await http.post(f"/analytics?timestamp={BASE * HOUR_MS}&user=k&impression")
    assert marker.status_code == 204
    late = await eventually(
        lambda: totals(redis, settings, hours),
        lambda t: t[0].impressions > expected[0].impressions and t[0].unique_users > expected[0].unique_users,
    )
    late = await totals(redis, settings, hours)
    assert late[0] == HourTotals(
        expected[0].unique_users + 1, expected[0].clicks + 1, expected[0].impressions + 1
    )
    assert late[1:] == expected[1:]


async def test_an_hour_changed_at_the_cuts_own_watermark_is_written_again(
    nc: NATS, redis: Redis, settings: Settings
) -> None:
    # What a single-hour replay leaves: the hour rebuilt in place, marked changed at the same watermark.
    await ensure_stream(nc, settings)
    keys = Keys(settings.key_prefix)
    gen, hour, token = 1, BASE, hour_token(BASE)
    await redis.set(keys.watermark(gen, 0), 5)
    await redis.pfadd(CellLayout(keys).users(Cell.of_hour(gen, 0, hour)), "a")
    await redis.hset(CellLayout(keys).counts(Cell.of_hour(gen, 0, hour)), "clicks", 1)
    await redis.zadd(keys.dirty(gen, 0), {token: 5})
    snapshots = await open_snapshots(nc, redis, settings)
    assert snapshots is not None
    assert await snapshots.write(gen, 0) is not None
    assert await snapshots.write(gen, 0) is None  # nothing changed: nothing written
    await redis.hset(CellLayout(keys).counts(Cell.of_hour(gen, 0, hour)), "clicks", 7)  # rebuilt: it differs
    await redis.zadd(keys.dirty(gen, 0), {token: 5})
    assert await snapshots.write(gen, 0) is not None
    assert (await snapshots.entry(0, token, 5)).clicks == 7
