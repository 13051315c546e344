"""Faults under load, each ending in exact counts checked against the 204s the client saw."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from contract.hours import HOUR_MS, system_now_ms
from deploy.settings import Settings
from tests.conftest import Server
from tests.helpers import eventually, isolated_settings, settled, stored_hours
from tests.integration.conftest import production_stack
from tests.integration.load import Tally, drive, wait_until_done
from tests.integration.workload import parse_text, stored_matches

pytestmark = pytest.mark.slow


@pytest.fixture
def own_settings(own_nats: Server, own_redis: Server) -> Settings:
    return isolated_settings(own_nats.url, own_redis.url, projector_batch=50)


@pytest.fixture
async def stack(own_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async for http in production_stack(own_settings):
        yield http


async def converged(
    http: httpx.AsyncClient, tally: Tally, settings: Settings, timeout: float = 60
) -> dict[int, tuple[int, int, int]]:
    """The served answers reach the truth; then, settled, Redis (one node or a cluster, read as the API
    reads it) holds it on two reads in a row. A 503 (a dependency still down) is "not yet"; any other
    answer but 200 fails the test: a 500 while the counts converge is a defect, not a wait."""
    truth = tally.truth

    async def answers() -> dict[int, tuple[int, int, int]]:
        out = {}
        for hour in truth.hours():
            response = await http.get(f"/analytics?timestamp={hour * HOUR_MS}")
            assert response.status_code in (200, 503), (hour, response.status_code, response.text)
            out[hour] = parse_text(response.text) if response.status_code == 200 else (-1, -1, -1)
        return out

    got = await eventually(
        answers, lambda a: all(a[h][1:] == truth.text(h)[1:] for h in truth.hours()), timeout=timeout
    )
    for hour in truth.hours():
        users = truth.text(hour)[0]
        assert abs(got[hour][0] - users) <= max(1, users * 0.03), (hour, got[hour], users)
    await settled(settings, lambda r: stored_hours(r, settings, truth.hours()), stored_matches(truth))
    return got


async def test_nats_server_killed_during_load_loses_no_acknowledged_event(
    stack: httpx.AsyncClient, own_nats: Server, own_settings: Settings
) -> None:
    tally = Tally()
    load = asyncio.create_task(drive(stack, system_now_ms(), 800, duplicate_every=10, tally=tally))
    await wait_until_done(tally, 250)
    own_nats.kill()
    await eventually(lambda: asyncio.sleep(0, tally.unavailable), lambda n: n >= 20)
    own_nats.start()  # same port and store: what was acknowledged must all be there
    await load
    await converged(stack, tally, own_settings)
    assert tally.unavailable >= 20
    print(f"\nnats-server SIGKILL under load: {tally.report()} counted=exact")


async def test_redis_flushed_during_load_converges_to_exact_counts(
    stack: httpx.AsyncClient, own_redis: Server, own_settings: Settings
) -> None:
    tally = Tally()
    load = asyncio.create_task(drive(stack, system_now_ms(), 800, duplicate_every=10, tally=tally))
    await wait_until_done(tally, 300)
    admin = Redis.from_url(own_redis.url)
    await admin.flushall()
    await admin.aclose()
    await load
    await converged(stack, tally, own_settings)
    print(f"\nRedis FLUSHALL under load: {tally.report()} counted=exact")
