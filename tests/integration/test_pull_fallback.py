"""The public-API pull reader, forced or chosen because nats-py's internals moved: the projector and
replay still count exactly what was posted."""

from __future__ import annotations

import asyncio
import logging

import httpx
import nats
import pytest
from redis.asyncio import Redis

from deploy.settings import Settings
from projector.live.balancer import run_projector
from projector.log import parser_tap
from projector.replay.driver import replay
from tests.helpers import metric, settled
from tests.integration.test_projector import counts_match, post_workload, stored


async def project_and_replay(settings: Settings, client: httpx.AsyncClient, redis: Redis, seed: int) -> None:
    truth = await post_workload(client, 200, seed=seed)
    own = await nats.connect(settings.nats_url)
    stop = asyncio.Event()
    task = asyncio.create_task(run_projector(settings, own, redis, stop))
    try:
        live = await settled(settings, lambda r: stored(r, settings, truth.hours()), counts_match(truth))  # type: ignore[arg-type]
        assert metric("hourglass_projector_pull_reader_fallback") == 1
        rebuilt = await nats.connect(settings.nats_url)
        try:
            await replay(settings, rebuilt, redis)
        finally:
            await rebuilt.close()
        assert await stored(redis, settings, truth.hours()) == live
    finally:
        stop.set()
        await task
        await own.close()


async def test_forced_public_reader_counts_exactly(
    settings: Settings, client: httpx.AsyncClient, redis: Redis
) -> None:
    await project_and_replay(settings.replace(pull_reader="public"), client, redis, seed=11)


async def test_a_missing_internal_falls_back_with_a_warning_and_still_counts_exactly(
    settings: Settings,
    client: httpx.AsyncClient,
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(parser_tap, "AWAITING_MSG_PAYLOAD", -1)  # as if nats-py had renamed it
    caplog.set_level(logging.WARNING, logger="projector")
    await project_and_replay(settings.replace(pull_reader="auto"), client, redis, seed=12)
    said = [
        r.getMessage()
        for r in caplog.records
        if "nats.protocol.parser.AWAITING_MSG_PAYLOAD" in r.getMessage()
    ]
    assert len(said) == 2  # once per connection: the projector's, the replay's
