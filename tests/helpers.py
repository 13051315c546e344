"""Test helpers: polling with a deadline (never fixed sleeps) and per-test settings."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx
import nats
from litestar.types import ASGIApp
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError
from prometheus_client import REGISTRY
from redis.exceptions import RedisError

from api.reader import HourTotals, Reader
from contract.hours import HOUR_MS, partition_filter, system_now_ms
from contract.keys import Keys
from deploy.projections_client import ProjectionsClient, connect
from deploy.settings import Settings
from tests.ports import free_port

T = TypeVar("T")
_ids = itertools.count(1)


NOT_YET: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, timed out (TimeoutError is one)
    RedisError,
    NatsError,
    httpx.TransportError,
)
"""What a probe may raise while the system is still coming round: a dependency not (yet) answering.
Anything else (an AssertionError above all) is a finding, raised at once."""


async def eventually(
    probe: Callable[[], Awaitable[T]],
    until: Callable[[T], bool],
    timeout: float = 20.0,
    interval: float = 0.05,
) -> T:
    """Poll `probe` until `until(result)` holds; fail with the last result after `timeout`. Only the
    NOT_YET exceptions count as "not yet"; any other exception from the probe fails the test at once."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        try:
            last = await probe()
            if until(last):
                return last
        except NOT_YET as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"probe kept failing: {exc!r}") from exc
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")
        await asyncio.sleep(interval)


async def clear_of_hour_end(margin_s: float) -> None:
    """Return at once unless the current UTC hour ends within `margin_s`; then return just after it has.
    For tests that follow a process whose clock cannot be pinned (a browser's) through "the current
    hour": such a test must not see that hour end while it runs."""
    left_ms = HOUR_MS - system_now_ms() % HOUR_MS
    if left_ms < margin_s * 1000:
        await asyncio.sleep(left_ms / 1000 + 0.05)


async def stored_hour(redis: ProjectionsClient, settings: Settings, hour: int) -> HourTotals:
    """What Redis holds for the hour in the live generation, past every read cache: for tests that
    mean Redis state, not what a GET may still serve (split by partition on a cluster, as the API)."""
    keys, split = Keys(settings.key_prefix), settings.redis_cluster
    return await Reader(redis, keys, settings.partitions, split_by_partition=split).hour(hour)


async def lagging(nc: NATS, redis: ProjectionsClient, settings: Settings) -> list[tuple[int, int, int]]:
    """(partition, watermark, last sequence) of every partition whose live-generation watermark has
    not reached the last sequence the stream holds on that partition's subjects, or is past the end
    of the stream (a log that went back below what was applied, not rebuilt yet)."""
    js = nc.jetstream()
    keys = Keys(settings.key_prefix)
    behind = []
    end = (await js.stream_info(settings.stream_name)).state.last_seq
    for p in range(settings.partitions):
        gen = keys.live_generation(await redis.get(keys.generation(p)))
        watermark = int(await redis.get(keys.watermark(gen, p)) or 0)
        if watermark > end:
            behind.append((p, watermark, end))
            continue
        try:
            last = await js.get_last_msg(settings.stream_name, partition_filter(settings.subject_prefix, p))
        except NotFoundError:
            continue  # nothing was ever written to this partition
        if watermark < (last.seq or 0):
            behind.append((p, watermark, last.seq or 0))
    return behind


async def settle(nc: NATS, redis: ProjectionsClient, settings: Settings, timeout: float = 60.0) -> None:
    """Wait until every partition's watermark reaches the stream's last sequence for its subjects:
    from then on, nothing written so far can still change an answer."""
    await eventually(lambda: lagging(nc, redis, settings), lambda behind: not behind, timeout)


async def settled(
    settings: Settings,
    read: Callable[[Any], Awaitable[T]],  # a Redis or a RedisCluster reader
    truth: Callable[[T], bool],
    timeout: float = 60.0,
    nc: NATS | None = None,
    redis: ProjectionsClient | None = None,
) -> T:
    """Settle, then read the answer twice from Redis itself (never a cached GET) and require both to
    match the truth: a poll that stops at the first right answer cannot see a count that later goes
    past it, this can. Uses `nc` and `redis` when given, else connections of its own."""
    own_nc = nc or await nats.connect(**settings.nats_options("test-settle"))
    own_redis = redis or connect(settings)
    try:
        answers = []
        for _ in range(2):
            await settle(own_nc, own_redis, settings, timeout)
            answers.append(await read(own_redis))
        assert all(truth(answer) for answer in answers), f"settled answers off the truth: {answers!r}"
        return answers[-1]
    finally:
        if nc is None:
            await own_nc.close()
        if redis is None:
            await own_redis.aclose()


async def stored_hours(
    redis: ProjectionsClient, settings: Settings, hours: list[int]
) -> dict[int, HourTotals]:
    return {hour: await stored_hour(redis, settings, hour) for hour in hours}


def pause(pid: int, timeout: float = 5.0) -> None:
    """SIGSTOP a process and return only once every thread of it has stopped.

    The signal is delivered asynchronously: without the wait, a request sent right after
    `kill` can still be answered by a thread that has not stopped yet.
    """
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = []
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/task/{task}/stat") as f:
                states.append(f.read().rsplit(")", 1)[1].split()[0])
        if states and all(state in ("T", "t") for state in states):
            return
        time.sleep(0.005)
    raise AssertionError(f"process {pid} did not stop within {timeout} s")


def metric(name: str, labels: dict[str, str] | None = None) -> float:
    """A sample from this process's Prometheus registry (0 when nothing was recorded yet)."""
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def isolated_settings(nats_url: str, redis_url: str, **overrides: object) -> Settings:
    """Settings whose stream, subjects and keys no other test touches, on shared servers."""
    n = next(_ids)
    base = Settings(
        nats_url=nats_url,
        redis_url=redis_url,
        stream_name=f"T{n}",
        subject_prefix=f"t{n}.events",
        key_prefix=f"t{n}",
        projector_idle_s=0.2,
        publish_timeout_s=1.0,
        redis_timeout_s=0.5,
        # Most tests write fixed historic hours and look at Redis itself: keep them all there, and let
        # the hot-window tests turn the window on.
        hot_hours=0,
        audit_enabled=False,  # compaction waits for no audit; the audit tests turn it on
        admin_port=0,  # tests that want the admin port take a free one
        http_port=free_port(),  # never the default 8080, which another stack on this machine may hold
    )
    return base.replace(**overrides)


def settings_env(settings: Settings) -> dict[str, str]:
    """The ANALYTICS_* environment that makes a subprocess read exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_")}
    env.update(settings.as_env())
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextlib.asynccontextmanager
async def lifespan(app: ASGIApp) -> AsyncIterator[None]:
    """Drive the ASGI lifespan on this event loop (Litestar's TestClient uses another thread's loop)."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.ensure_future(app(scope, inbox.get, outbox.put))  # type: ignore[arg-type]
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    assert started["type"] == "lifespan.startup.complete", started
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task


async def serve(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with lifespan(app), httpx.AsyncClient(transport=transport, base_url="http://hourglass") as http:
        yield http
