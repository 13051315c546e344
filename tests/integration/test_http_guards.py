"""What stands between the public and the data over HTTP: read tokens, the admin port, the POST rate
limit and the idle-connection timeout."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from contract.hours import HOUR_MS
from deploy.servers import ROOT, wait_for_port
from deploy.settings import Settings
from projector.log.stream_config import ensure_stream
from server.app import Clients, create_app
from tests.conftest import Server
from tests.helpers import isolated_settings, serve, settings_env
from tests.ports import free_port


async def app(settings: Settings, nc: NATS, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    await ensure_stream(nc, settings)
    async for http in serve(create_app(settings, Clients(nc=nc, redis=redis))):
        yield http


@pytest.fixture
async def guarded(
    nats_server: Server, redis_server: Server, nc: NATS, redis: Redis
) -> AsyncIterator[httpx.AsyncClient]:
    settings = isolated_settings(nats_server.url, redis_server.url, read_tokens="tok-one, tok-two")
    async for http in app(settings, nc, redis):
        yield http


async def test_reads_need_a_read_token_when_tokens_are_set(guarded: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic dG9rLW9uZQ=="}):
        refused = await guarded.get("/analytics?timestamp=1", headers=headers)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == 'Bearer realm="hourglass"'
        assert "read token" in refused.text
    ranged = await guarded.get(f"/analytics?from=0&to={2 * HOUR_MS}")
    assert ranged.status_code == 401
    for token in ("tok-one", "tok-two"):
        ok = await guarded.get("/analytics?timestamp=1", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
    # Tracking stays public.
    assert (await guarded.post("/analytics?timestamp=1&user=u&click")).status_code == 204
    assert (await guarded.get("/healthz")).status_code == 200


async def test_metrics_are_not_on_the_public_port(guarded: httpx.AsyncClient) -> None:
    assert (await guarded.get("/metrics")).status_code == 404


async def test_a_client_over_its_rate_gets_429_and_nothing_is_stored(
    nats_server: Server, redis_server: Server, nc: NATS, redis: Redis
) -> None:
    settings = isolated_settings(
        nats_server.url, redis_server.url, post_rate_per_s=0.01, post_burst=2, trusted_proxies="127.0.0.0/8"
    )
    js = nc.jetstream()
    async for http in app(settings, nc, redis):
        path = "/analytics?timestamp=1&user=u&click"
        assert [(await http.post(path)).status_code for _ in range(2)] == [204, 204]
        before = (await js.stream_info(settings.stream_name)).state.messages
        over = await http.post(path)
        assert over.status_code == 429
        assert int(over.headers["retry-after"]) >= 1
        assert "rate limit" in over.text
        assert (await js.stream_info(settings.stream_name)).state.messages == before
        # Behind a trusted proxy each client has its own bucket, named by X-Forwarded-For...
        other = {"X-Forwarded-For": "203.0.113.7"}
        assert (await http.post(path, headers=other)).status_code == 204
        # ...whose left part a client can forge: only the right-most untrusted hop counts.
        forged = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}
        assert (await http.post(path, headers=forged)).status_code == 204
        assert (await http.post(path, headers=forged)).status_code == 429
        assert (await js.stream_info(settings.stream_name)).state.messages == before + 2  # the two 204s only


@pytest.fixture
def server_process(
    nats_server: Server, redis_server: Server, tmp_path: Path
) -> Iterator[tuple[Settings, subprocess.Popen[bytes]]]:
    settings = isolated_settings(
        nats_server.url,
        redis_server.url,
        http_port=free_port(),
        admin_port=free_port(),
        http_idle_timeout_s=1.0,
    )
    subprocess.run(
        [sys.executable, "-m", "projector", "stream"], env=settings_env(settings), cwd=ROOT, check=True
    )
    env = settings_env(settings)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "server"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_port("127.0.0.1", settings.http_port, 30, proc)
        wait_for_port("127.0.0.1", settings.admin_port, 30, proc)
        yield settings, proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def test_metrics_are_served_on_the_admin_port_only(
    server_process: tuple[Settings, subprocess.Popen[bytes]],
) -> None:
    settings, _ = server_process
    public = f"http://127.0.0.1:{settings.http_port}"
    admin = f"http://127.0.0.1:{settings.admin_port}"
    assert httpx.post(f"{public}/analytics?timestamp=1&user=m&click").status_code == 204
    assert httpx.get(f"{public}/metrics").status_code == 404
    scraped = httpx.get(f"{admin}/metrics")
    assert scraped.status_code == 200
    assert 'hourglass_http_requests_total{method="POST",route="/analytics",status="204"}' in scraped.text
    assert httpx.head(f"{admin}/metrics").status_code == 200
    assert httpx.get(f"{admin}/analytics?timestamp=1").status_code == 404


def test_a_connection_that_sends_nothing_is_closed(
    server_process: tuple[Settings, subprocess.Popen[bytes]],
) -> None:
    settings, _ = server_process
    with socket.create_connection(("127.0.0.1", settings.http_port)) as idle:
        idle.settimeout(settings.http_idle_timeout_s + 10)
        started = time.monotonic()
        assert idle.recv(1024) == b""  # closed by the server, not by our timeout (that would raise)
        assert time.monotonic() - started < settings.http_idle_timeout_s + 5
