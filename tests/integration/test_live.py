"""`GET /analytics/live`: Server-Sent Events of the current hour, driven through the ASGI app itself
(httpx's ASGI transport would wait for the end of a stream that never ends)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from litestar.types import ASGIApp
from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from contract.hours import HOUR_MS, hour_of, system_now_ms
from deploy.settings import Settings
from server.app import Clients, create_app
from tests.conftest import Server
from tests.helpers import eventually, isolated_settings, lifespan
from tests.integration.conftest import Projectors


@dataclass
class Opened:
    status: int
    headers: dict[str, str]
    chunks: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)

    async def next_event(self, timeout: float = 2.0) -> dict[str, Any]:
        """The next `data:` event (skipping comments and the retry hint), within `timeout`."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            chunk = await asyncio.wait_for(self.chunks.get(), max(left, 0.001))
            if chunk.startswith(b"data: "):
                return dict(json.loads(chunk[6:]))


@contextlib.asynccontextmanager
async def stream(
    app: ASGIApp, path: str, headers: list[tuple[bytes, bytes]] | None = None
) -> AsyncIterator[Opened]:
    """A GET through the raw ASGI interface, its body handed over chunk by chunk."""
    started: asyncio.Future[Opened] = asyncio.get_running_loop().create_future()
    gone = asyncio.Event()
    sent_request = False
    opened: Opened | None = None

    async def receive() -> dict[str, Any]:
        nonlocal sent_request
        if not sent_request:
            sent_request = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal opened
        if message["type"] == "http.response.start":
            found = {k.decode(): v.decode() for k, v in message["headers"]}
            opened = Opened(message["status"], found)
            started.set_result(opened)
        elif message["type"] == "http.response.body" and opened is not None:
            if message.get("body"):
                await opened.chunks.put(message["body"])
            if not message.get("more_body"):
                await opened.chunks.put(b"")  # the end

    path_only, _, query = path.partition("?")
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path_only, "raw_path": path_only.encode(), "query_string": query.encode(), "root_path": "",
        "headers": headers or [], "client": ("127.0.0.1", 1234), "server": ("hourglass", 80), "state": {},
    }  # fmt: skip
    task = asyncio.ensure_future(app(scope, receive, send))  # type: ignore[arg-type]
    try:
        yield await asyncio.wait_for(started, 5)
    finally:
        gone.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)


@pytest.fixture
def live_settings(nats_server: Server, redis_server: Server) -> Settings:
    return isolated_settings(nats_server.url, redis_server.url, live_heartbeat_s=0.3, live_max_subscribers=2)


PINNED_MS = hour_of(system_now_ms()) * HOUR_MS + 30 * 60_000
"""The live app's clock stands still half way through the hour the session started in: a test that
follows "the current hour" must not see that hour end while it runs (a real clock did, in CI)."""


@pytest.fixture
async def live_app(live_settings: Settings, nc: NATS, redis: Redis) -> AsyncIterator[ASGIApp]:
    app = create_app(live_settings, Clients(nc=nc, redis=redis), clock=lambda: PINNED_MS)
    async with lifespan(app):
        yield app


@pytest.fixture
def settings(live_settings: Settings) -> Settings:
    return live_settings  # the `client` and `projectors` fixtures run on the same stream


async def test_a_live_stream_sends_the_current_hour_then_every_change(
    live_app: ASGIApp, client: httpx.AsyncClient, projectors: Projectors
) -> None:
    await projectors.start()
    now = PINNED_MS
    async with stream(live_app, "/analytics/live") as live:
        assert live.status == 200
        assert live.headers["content-type"].startswith("text/event-stream")
        first = await live.next_event()
        assert set(first) >= {"hour_start", "unique_users", "clicks", "impressions"}
        assert first["clicks"] == 0
        for n in (1, 2):
            assert (await client.post(f"/analytics?timestamp={now}&user=live{n}&click")).status_code == 204
            while (pushed := await live.next_event(timeout=2.0))["clicks"] < n:
                pass  # coalesced pushes may show an earlier count first
            assert pushed["clicks"] == n
            assert pushed["unique_users"] == n
        # An earlier hour's change is not pushed; heartbeats keep the stream open meanwhile.
        earlier = (hour_of(now) - 5) * HOUR_MS
        assert (await client.post(f"/analytics?timestamp={earlier}&user=old&click")).status_code == 204
        chunk = await asyncio.wait_for(live.chunks.get(), 2)
        while chunk.startswith(b"data: ") and json.loads(chunk[6:])["clicks"] == 2:
            chunk = await asyncio.wait_for(live.chunks.get(), 2)
        assert chunk == b": heartbeat\n\n"


async def test_a_filtered_live_stream_sends_only_its_values_events(
    live_app: ASGIApp, client: httpx.AsyncClient, projectors: Projectors
) -> None:
    await projectors.start()
    now = PINNED_MS
    async with stream(live_app, "/analytics/live?campaign=spring") as live:
        assert live.status == 200
        assert (await live.next_event())["clicks"] == 0
        for extra in ("&campaign=autumn", "", "&campaign=spring&site=a.com"):
            answer = await client.post(f"/analytics?timestamp={now}&user=f{len(extra)}&click{extra}")
            assert answer.status_code == 204

        async def clicks() -> int:
            return int((await client.get(f"/analytics?timestamp={now}")).text.splitlines()[1].split(",")[1])

        while (last := await live.next_event(timeout=5.0))["clicks"] < 1:
            pass
        await eventually(clicks, lambda n: n >= 3, timeout=10)  # all three counted in the hour
        with contextlib.suppress(TimeoutError):
            while True:  # the last push once the hour stopped changing
                last = await live.next_event(timeout=1.0)
        assert (last["clicks"], last["unique_users"]) == (1, 1)
    async with stream(live_app, "/analytics/live?campain=spring") as refused:
        assert refused.status == 400
        assert b"did you mean campaign" in await refused.chunks.get()


async def test_live_subscribers_are_bounded_per_worker(live_app: ASGIApp) -> None:
    async with stream(live_app, "/analytics/live") as one, stream(live_app, "/analytics/live") as two:
        assert one.status == two.status == 200
        async with stream(live_app, "/analytics/live") as three:
            assert three.status == 503
            assert three.headers["retry-after"] == "5"

    # The slots are back as soon as those streams' responses have ended: the hub's generator ends with
    # its response, not whenever the garbage collector gets to it.
    async with stream(live_app, "/analytics/live") as again:
        assert again.status == 200


async def test_live_streams_end_when_the_app_shuts_down(
    live_settings: Settings, nc: NATS, redis: Redis
) -> None:
    app = create_app(live_settings, Clients(nc=nc, redis=redis))
    running = lifespan(app)
    await running.__aenter__()
    async with stream(app, "/analytics/live") as live:
        await live.next_event()
        ended = asyncio.create_task(_until_end(live))
        await running.__aexit__(None, None, None)  # shutdown while the stream is open
        assert await asyncio.wait_for(ended, 5)


async def _until_end(live: Opened) -> bool:
    while await live.chunks.get() != b"":
        pass
    return True


async def test_live_needs_a_read_token_when_tokens_are_set(
    nats_server: Server, redis_server: Server, nc: NATS, redis: Redis
) -> None:
    settings = isolated_settings(nats_server.url, redis_server.url, read_tokens="tok")
    app = create_app(settings, Clients(nc=nc, redis=redis))
    async with lifespan(app):
        async with stream(app, "/analytics/live") as refused:
            assert refused.status == 401
        async with stream(app, "/analytics/live", [(b"authorization", b"Bearer tok")]) as allowed:
            assert allowed.status == 200
