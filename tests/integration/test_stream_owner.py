"""The stream has one owner: `./just stream` creates and configures it; everyone else only checks it."""

from __future__ import annotations

import functools
import subprocess
import sys

import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError
from redis.asyncio import Redis

from contract.stream import PARTITIONS_METADATA, dead_letter_stream
from deploy.servers import ROOT
from deploy.settings import Settings
from projector.log.stream_config import PartitionMismatch, ensure_stream
from server.app import create_app
from tests.helpers import eventually, serve, settings_env


def run(args: list[str], settings: Settings) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        env=settings_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_the_stream_records_its_partition_count_and_has_a_dead_letter_stream(
    nc: NATS, settings: Settings
) -> None:
    made = run(["-m", "projector", "stream"], settings)
    assert made.returncode == 0, made.stderr
    js = nc.jetstream()
    info = await js.stream_info(settings.stream_name)
    assert (info.config.metadata or {})[PARTITIONS_METADATA] == str(settings.partitions)
    dead = await js.stream_info(dead_letter_stream(settings.stream_name))
    assert dead.config.name == f"{settings.stream_name}_DEAD"
    assert not set(dead.config.subjects or []) & set(info.config.subjects or [])
    again = run(["-m", "projector", "stream"], settings)  # idempotent
    assert again.returncode == 0, again.stderr


async def test_a_projector_with_another_partition_count_refuses_to_run_and_writes_nothing(
    nc: NATS, redis: Redis, settings: Settings
) -> None:
    await ensure_stream(nc, settings)
    wrong = settings.replace(partitions=settings.partitions + 3)
    result = run(["-m", "projector", "run"], wrong)
    assert result.returncode != 0
    assert f"created with {settings.partitions} partitions" in result.stderr
    assert f"ANALYTICS_PARTITIONS is {settings.partitions + 3}" in result.stderr
    assert [k async for k in redis.scan_iter(match=f"{settings.key_prefix}:*")] == []
    replay = run(["-m", "projector", "replay"], wrong)
    assert replay.returncode != 0
    assert f"created with {settings.partitions} partitions" in replay.stderr
    assert [k async for k in redis.scan_iter(match=f"{settings.key_prefix}:*")] == []


async def test_the_http_server_and_the_stream_recipe_refuse_another_partition_count(
    nc: NATS, settings: Settings
) -> None:
    await ensure_stream(nc, settings)
    wrong = settings.replace(partitions=1)
    server = run(["-m", "server"], wrong)
    assert server.returncode != 0
    assert "refusing to start" in server.stderr
    assert f"created with {settings.partitions} partitions" in server.stderr
    assert "ANALYTICS_PARTITIONS is 1" in server.stderr
    with pytest.raises(PartitionMismatch):
        await ensure_stream(nc, wrong)


async def test_http_workers_never_create_the_stream(nc: NATS, settings: Settings) -> None:
    async for http in serve(create_app(settings)):
        ready = await eventually(functools.partial(http.get, "/readyz"), lambda r: "does not exist" in r.text)
        assert f"nats: stream {settings.stream_name} does not exist" in ready.text
        response = await http.post("/analytics?timestamp=1&user=u&click")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
    with pytest.raises(NotFoundError):
        await nc.jetstream().stream_info(settings.stream_name)
