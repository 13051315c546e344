"""The log and Redis losing data underneath the projector: never quietly, and never fatally."""

from __future__ import annotations

import asyncio
import functools
import logging
import subprocess
import sys
from pathlib import Path

import httpx
import nats
import pytest
from nats.aio.client import Client as NATS
from redis.asyncio import Redis
from redis.asyncio import Redis as AsyncRedis

from api.reader import HourTotals
from contract.hours import HOUR_MS
from contract.keys import Keys
from deploy.servers import ROOT
from deploy.settings import Settings
from projector.live import log_trouble
from projector.log.stream_config import ensure_stream
from tests.conftest import Server
from tests.helpers import eventually, isolated_settings, metric, settings_env, settled, stored_hour
from tests.integration.conftest import Projectors, production_stack

HOUR = 17
TS = HOUR * HOUR_MS


async def test_events_dropped_by_retention_before_they_were_applied_are_reported_loudly(
    client: httpx.AsyncClient,
    nc: NATS,
    redis: Redis,
    settings: Settings,
    projectors: Projectors,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="projector")
    for i in range(40):
        assert (await client.post(f"/analytics?timestamp={TS}&user=early{i}&click")).status_code == 204
    js = nc.jetstream()
    last = (await js.stream_info(settings.stream_name)).state.last_seq
    await js.purge_stream(settings.stream_name, seq=last + 1)  # retention took everything, unapplied
    before = sum(metric("hourglass_projector_retention_gaps_total", {"partition": str(p)}) for p in range(4))
    for i in range(8):
        assert (await client.post(f"/analytics?timestamp={TS}&user=late{i}&impression")).status_code == 204
    await projectors.start()

    ready = await eventually(lambda: client.get("/readyz"), lambda r: "retention dropped" in r.text)
    assert ready.status_code == 503
    assert "./just replay rebuilds" in ready.text
    after = sum(metric("hourglass_projector_retention_gaps_total", {"partition": str(p)}) for p in range(4))
    assert after > before
    assert any("retention dropped stream seqs" in r.getMessage() for r in caplog.records)
    # What the log still holds is applied: the alarm is about what it no longer holds.
    await eventually(lambda: stored_hour(redis, settings, HOUR), lambda t: t.impressions == 8)
    assert (await stored_hour(redis, settings, HOUR)).clicks == 0


async def test_a_log_that_lost_applied_messages_is_followed_again_from_its_end_loudly(
    client: httpx.AsyncClient,
    nc: NATS,
    redis: Redis,
    settings: Settings,
    projectors: Projectors,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As after every node's OS crashed under the default sync_interval (docs/faults.md): the stream
    ends below the watermarks, and new events get sequence numbers that were applied already."""
    caplog.set_level(logging.ERROR, logger="projector")
    monkeypatch.setattr(log_trouble, "REWIND_CONFIRM_S", 1.0)  # how long a shorter stream is waited out
    await projectors.start()
    for i in range(40):
        assert (await client.post(f"/analytics?timestamp={TS}&user=before{i}&click")).status_code == 204
    await settled(
        settings, lambda r: stored_hour(r, settings, HOUR), lambda t: t.clicks == 40, nc=nc, redis=redis
    )
    await projectors.stop_all()
    js = nc.jetstream()
    await js.delete_stream(settings.stream_name)
    await ensure_stream(nc, settings)  # the log, back with less than was applied

    def rewinds() -> list[float]:
        return [metric("hourglass_projector_log_rewinds_total", {"partition": str(p)}) for p in range(4)]

    before = rewinds()
    for i in range(8):
        assert (await client.post(f"/analytics?timestamp={TS}&user=after{i}&impression")).status_code == 204
    await projectors.start()

    # Every partition had applied past the new end of the log: each must say so.
    await eventually(
        lambda: asyncio.sleep(0, rewinds()), lambda now: all(a > b for a, b in zip(now, before, strict=True))
    )
    # The partitions are rebuilt from the log: the clicks it lost are gone, no new event is skipped.
    want = (0, 8)
    await settled(
        settings,
        lambda r: stored_hour(r, settings, HOUR),
        lambda t: (t.clicks, t.impressions) == want,
        nc=nc,
        redis=redis,
    )
    ready = await eventually(lambda: client.get("/readyz"), lambda r: "the log lost" in r.text)
    assert ready.status_code == 503
    assert "./just replay clears this" in ready.text
    assert all(a > b for a, b in zip(rewinds(), before, strict=True))
    assert any("stream seqs up to" in r.getMessage() for r in caplog.records)


async def test_an_idle_partition_keeps_its_watermark_at_the_head_of_the_log(
    client: httpx.AsyncClient, redis: Redis, settings: Settings, projectors: Projectors
) -> None:
    await projectors.start()
    for i in range(30):
        assert (await client.post(f"/analytics?timestamp={TS}&user=only{i % 2}&click")).status_code == 204
    keys = Keys(settings.key_prefix)

    async def marks() -> list[int]:
        return [int(m or 0) for m in await redis.mget([keys.watermark(1, p) for p in range(4)])]

    # Two users touch at most two partitions, yet every partition's watermark reaches the last message.
    await eventually(marks, lambda m: len(set(m)) == 1 and m[0] > 0)


@pytest.fixture
def eviction_settings(own_nats: Server, own_redis: Server) -> Settings:
    return isolated_settings(own_nats.url, own_redis.url)


async def test_a_redis_that_may_evict_keys_is_refused_at_start(eviction_settings: Settings) -> None:
    nc = await nats.connect(eviction_settings.nats_url)
    await ensure_stream(nc, eviction_settings)
    await nc.close()
    r = AsyncRedis.from_url(eviction_settings.redis_url)
    await r.config_set("maxmemory-policy", "allkeys-lru")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "projector", "run"],
            env=settings_env(eviction_settings),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0
        assert "maxmemory-policy is allkeys-lru" in result.stderr
        assert "noeviction" in result.stderr
        assert [k async for k in r.scan_iter(match=f"{eviction_settings.key_prefix}:*")] == []
    finally:
        await r.aclose()


async def test_redis_out_of_memory_is_retried_and_counted_then_everything_applies(
    eviction_settings: Settings,
) -> None:
    settings = eviction_settings
    async for http in production_stack(settings):
        redis = AsyncRedis.from_url(settings.redis_url)
        before = metric("hourglass_projector_redis_oom_total")
        await redis.config_set("maxmemory", 1)  # every write is refused with OOM
        try:
            for i in range(12):
                assert (await http.post(f"/analytics?timestamp={TS}&user=m{i}&click")).status_code == 204
            await eventually(functools.partial(_value, before), lambda n: n > 0)
        finally:
            await redis.config_set("maxmemory", 0)
        expected = HourTotals(unique_users=12, clicks=12, impressions=0)
        assert (
            await eventually(functools.partial(stored_hour, redis, settings, HOUR), expected.__eq__)
            == expected
        )
        await redis.aclose()


async def _value(before: float) -> float:
    return metric("hourglass_projector_redis_oom_total") - before


async def test_a_redis_that_hides_its_configuration_gets_a_warning_and_the_projector_runs(
    eviction_settings: Settings, tmp_path: Path
) -> None:
    admin = AsyncRedis.from_url(eviction_settings.redis_url)
    await admin.acl_setuser(
        "noconfig",
        enabled=True,
        passwords=["+secret"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-config"],
    )
    host_port = eviction_settings.redis_url.rpartition("@")[2]
    limited = eviction_settings.replace(redis_url=f"redis://noconfig:secret@{host_port}")
    nc = await nats.connect(limited.nats_url)
    await ensure_stream(nc, limited)
    await nc.close()
    log = tmp_path / "projector.log"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "projector", "run", env=settings_env(limited), cwd=ROOT,
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        members = Keys(limited.key_prefix).members
        await eventually(lambda: admin.zcard(members), lambda n: n == 1)  # it runs: it has joined
        assert "cannot read Redis maxmemory-policy" in log.read_text()
        assert proc.returncode is None
    finally:
        proc.terminate()
        await proc.wait()
        await admin.aclose()
