"""Dependencies going away: prompt 503s with Retry-After, never a hang or a false 204, and recovery."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from deploy.settings import Settings
from tests.conftest import Server
from tests.helpers import eventually, isolated_settings, pause
from tests.integration.conftest import production_stack

pytestmark = pytest.mark.slow


@pytest.fixture
def own_settings(own_nats: Server, own_redis: Server) -> Settings:
    return isolated_settings(own_nats.url, own_redis.url)


@pytest.fixture
async def app_client(own_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app owning its connections, as in production (it connects in its lifespan)."""
    async for http in production_stack(own_settings):
        yield http


async def test_post_answers_503_promptly_while_nats_is_down_and_recovers(
    app_client: httpx.AsyncClient, own_nats: Server
) -> None:
    assert (await app_client.post("/analytics?timestamp=1&user=a&click")).status_code == 204
    own_nats.kill()
    for _ in range(3):
        started = time.monotonic()
        response = await app_client.post("/analytics?timestamp=1&user=b&click")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert time.monotonic() - started < 3.0
    assert (await app_client.get("/readyz")).status_code == 503
    # The balancer's probe says so at once: nats-py sees the closed socket, no refresh needed.
    ingest = await app_client.get("/readyz/ingest")
    assert ingest.status_code == 503, ingest.text
    assert "nats: not connected" in ingest.text
    assert ingest.headers["retry-after"] == "1"
    own_nats.start()  # same port, same store: the stream is still there
    response = await eventually(
        lambda: app_client.post("/analytics?timestamp=1&user=c&click"),
        lambda r: r.status_code == 204,
        timeout=30,
    )
    assert response.status_code == 204
    await eventually(lambda: app_client.get("/readyz/ingest"), lambda r: r.status_code == 200, timeout=30)


async def test_get_answers_503_promptly_while_redis_is_down_and_recovers(
    app_client: httpx.AsyncClient, own_redis: Server, own_settings: Settings
) -> None:
    assert (await app_client.get("/analytics?timestamp=1")).status_code == 200
    own_redis.kill()
    ready = await eventually(lambda: app_client.get("/readyz"), lambda r: "redis:" in r.text)
    assert ready.status_code == 503
    # Ingestion does not need Redis: the balancer's probe stays 200 and POSTs are taken.
    assert (await app_client.get("/readyz/ingest")).status_code == 200
    assert (await app_client.post("/analytics?timestamp=1&user=r&click")).status_code == 204
    started = time.monotonic()
    response = await app_client.get("/analytics?timestamp=7200000")  # an hour no worker has cached
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "Traceback" not in response.text
    assert time.monotonic() - started < 3.0
    # A cached hour is served until Redis has not confirmed it for ANALYTICS_READ_STALENESS_S.
    await eventually(
        lambda: app_client.get("/analytics?timestamp=1"),
        lambda r: r.status_code == 503,
        timeout=own_settings.read_staleness_s + 3,
    )
    own_redis.start()
    await eventually(
        lambda: app_client.get("/analytics?timestamp=1"), lambda r: r.status_code == 200, timeout=30
    )
    assert await Redis.from_url(own_settings.redis_url).ping()


async def test_a_hung_nats_server_gets_503_within_the_publish_timeout(
    app_client: httpx.AsyncClient, own_nats: Server, own_settings: Settings
) -> None:
    assert (await app_client.post("/analytics?timestamp=1&user=a&click")).status_code == 204
    pause(own_nats.proc.pid)  # alive but silent: the socket stays open
    try:
        started = time.monotonic()
        response = await app_client.post("/analytics?timestamp=1&user=b&click")
        took = time.monotonic() - started
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert took < own_settings.publish_timeout_s + 2.0  # the contract: no hang past the timeout
    finally:
        os.kill(own_nats.proc.pid, signal.SIGCONT)
    await eventually(
        lambda: app_client.post("/analytics?timestamp=1&user=c&click"), lambda r: r.status_code == 204
    )


async def test_a_hung_redis_gets_503_within_the_redis_timeout(
    app_client: httpx.AsyncClient, own_redis: Server, own_settings: Settings
) -> None:
    pause(own_redis.proc.pid)
    try:
        started = time.monotonic()
        response = await app_client.get("/analytics?timestamp=10800000")  # not cached anywhere
        took = time.monotonic() - started
        assert response.status_code == 503
        assert took < own_settings.redis_timeout_s + 2.0
        ready = await eventually(lambda: app_client.get("/readyz"), lambda r: r.status_code == 503)
        assert "redis" in ready.text or "checks:" in ready.text
        # The balancer's probe stays 200: ingestion does not wait on Redis.
        for _ in range(8):  # across a few refreshes, each one waiting out the hung Redis
            ingest = await app_client.get("/readyz/ingest")
            assert ingest.status_code == 200, ingest.text
            await asyncio.sleep(0.5)
        assert (await app_client.post("/analytics?timestamp=1&user=h&click")).status_code == 204
    finally:
        os.kill(own_redis.proc.pid, signal.SIGCONT)
    await eventually(lambda: app_client.get("/analytics?timestamp=10800000"), lambda r: r.status_code == 200)
