"""History at scale: Redis memory with and without the hot window, restore after FLUSHALL, cold reads.

Run: ./just bench-history [--hours 10000] [--events-per-hour 1000] [--window 48]
(own nats-server, valkey-server and HTTP server on free ports, temp dirs)

1. Publishes `hours` hours of history ending now (`events-per-hour` events each, half of them
   clicks, the other half impressions of the same users, one message per hour and partition).
2. Projects it with no window (ANALYTICS_HOT_HOURS=0) and reports Redis `used_memory`; then the same
   Redis under a `window`-hour window, once the old hours have left it.
3. FLUSHALL, then times until every hot hour reads exactly as before (restore from the snapshots
   plus the tail); a full `./just replay` of the same log is timed beside it as the baseline.
4. Starts `python -m server` and times GETs (one client, keep-alive) of cold hours: the first read
   of each (through to the snapshot store), then the same hours again (cached), and hot hours.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import nats
from nats.aio.client import Client as NATS
from nats.js.api import PubAck
from redis.asyncio import Redis

from api.cold import ColdStore
from api.reader import HourTotals, Reader
from contract.hours import HOUR_MS, hour_of, partition_of, subject, system_now_ms
from contract.keys import Keys
from contract.schema import Event, Kind, batch_of, encode
from deploy.servers import ROOT, wait_for_port
from deploy.settings import Settings
from projector.live.balancer import Projector
from projector.log.stream_config import ensure_stream
from projector.replay.driver import replay
from tests.bench.servers import own_servers
from tests.helpers import settings_env
from tests.ports import free_port


async def publish(settings: Settings, hours: range, per_hour: int) -> int:
    nc = await nats.connect(settings.nats_url)
    js = nc.jetstream()
    await ensure_stream(nc, settings)
    # Each hour has its own users (97 rotating sets), grouped by the partition their name maps to.
    groups: list[dict[int, list[str]]] = []
    for variant in range(97):
        by_partition: dict[int, list[str]] = {}
        for i in range(per_hour // 2):
            user = f"{variant}-user-{i}"
            by_partition.setdefault(partition_of(user, settings.partitions), []).append(user)
        groups.append(by_partition)
    events = 0
    pending: list[asyncio.Future[PubAck]] = []  # PubAcks awaited a thousand at a time
    for hour in hours:
        ts = hour * HOUR_MS + 1
        for p, names in groups[hour % 97].items():
            batch = [Event(ts, u, Kind.CLICK) for u in names]
            batch += [Event(ts, u, Kind.IMPRESSION) for u in names]
            events += len(batch)
            payload = encode(batch_of(tuple(batch)))
            pending.append(await js.publish_async(subject(settings.subject_prefix, hour, p), payload))
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
    await asyncio.gather(*pending)
    await nc.close()
    return events


async def until(probe: Callable[[], Awaitable[bool]], timeout: float) -> float:
    """Seconds until `probe` holds (polled every 50 ms)."""
    started = time.perf_counter()
    while not await probe():
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"not done after {timeout} s")
        await asyncio.sleep(0.05)
    return time.perf_counter() - started


class Stack:
    """Projectors run in this process, with the given settings, until stopped."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings, self.redis = settings, redis
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.nc: NATS | None = None

    async def __aenter__(self) -> Stack:
        self.nc = await nats.connect(self.settings.nats_url)
        self.task = asyncio.create_task(Projector(self.settings, self.nc, self.redis).run(self.stop))
        return self

    async def __aexit__(self, *_: object) -> None:
        self.stop.set()
        assert self.task is not None
        assert self.nc is not None
        await self.task
        await self.nc.close()


async def caught_up(settings: Settings, redis: Redis, nc: NATS) -> bool:
    last = (await nc.jetstream().stream_info(settings.stream_name)).state.last_seq
    keys = Keys(settings.key_prefix)
    marks = []
    for p in range(settings.partitions):
        gen = keys.live_generation(await redis.get(keys.generation(p)))
        marks.append(await redis.get(keys.watermark(gen, p)))
    return all(m is not None and int(m) >= last for m in marks)


async def cold_count(settings: Settings, redis: Redis) -> int:
    keys = Keys(settings.key_prefix)
    gens = [keys.live_generation(await redis.get(keys.generation(p))) for p in range(settings.partitions)]
    return sum([int(await redis.hlen(keys.cold(gens[p], p))) for p in range(settings.partitions)])


async def used_memory(redis: Redis) -> int:
    return int((await redis.info("memory"))["used_memory"])


async def read_all(settings: Settings, redis: Redis, nc: NATS, hours: range) -> list[HourTotals]:
    reader = Reader(
        redis, Keys(settings.key_prefix), settings.partitions, ColdStore(nc, settings.stream_name)
    )
    return [await reader.hour(h) for h in hours]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed_gets(base: str, hours: list[int]) -> list[float]:
    took = []
    with httpx.Client(base_url=base) as client:
        for hour in hours:
            started = time.perf_counter()
            response = client.get(f"/analytics?timestamp={hour * HOUR_MS}")
            took.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.text
    return took


async def run(args: argparse.Namespace, settings: Settings, workdir: Path) -> None:
    now = hour_of(system_now_ms())
    hours = range(now - args.hours + 1, now + 1)
    redis = Redis.from_url(settings.redis_url, socket_timeout=120)
    base = await used_memory(redis)
    started = time.perf_counter()
    events = await publish(settings, hours, args.events_per_hour)
    print(
        f"published {events:,} events over {len(hours):,} hours in {time.perf_counter() - started:.1f}s",
        flush=True,
    )

    nc = await nats.connect(settings.nats_url)
    whole = settings.replace(hot_hours=0, snapshot_interval_s=1)
    async with Stack(whole, redis):
        took = await until(lambda: caught_up(whole, redis, nc), 1800)
    print(f"projected in {took:.1f}s", flush=True)
    no_window = await used_memory(redis) - base
    windowed = settings.replace(hot_hours=args.window, snapshot_interval_s=1)
    old = (len(hours) - args.window) * settings.partitions
    async with Stack(windowed, redis):
        took = await until(lambda: _at_least(cold_count(windowed, redis), old), 600)
    print(f"{old:,} hour-partitions left Redis in {took:.1f}s", flush=True)
    with_window = await used_memory(redis) - base

    hot = range(now - args.window + 1, now + 1)
    expected = await read_all(windowed, redis, nc, hot)
    await redis.flushall(asynchronous=False)
    async with Stack(windowed, redis):
        restore = await until(_same(read_all, windowed, redis, nc, hot, expected), 600)
        assert await caught_up(windowed, redis, nc)
    print(f"FLUSHALL to every hot hour exact: {restore:.2f}s", flush=True)
    full = (await replay(windowed, nc, redis)).seconds
    print(f"full replay of the log: {full:.1f}s", flush=True)

    # Cold reads through the real HTTP server (the projector keeps running, as in production).
    http = windowed.replace(http_port=free_port(), http_workers=1)
    server = subprocess.Popen(  # noqa: ASYNC220 (started once, not awaited on)
        [sys.executable, "-m", "server"],
        env=settings_env(http),
        cwd=ROOT,
        stdout=(workdir / "server.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    async with Stack(windowed, redis):
        await until(lambda: _evicted(windowed, redis, old), 600)  # the replay made every hour hot again
        after_replay = await used_memory(redis) - base
        try:
            wait_for_port("127.0.0.1", http.http_port, 30)
            url = f"http://127.0.0.1:{http.http_port}"
            cold_hours = [
                now - args.window - 1 - 7 * i for i in range(min(args.reads, (len(hours) - args.window) // 7))
            ]
            first = await asyncio.to_thread(timed_gets, url, cold_hours)
            again = await asyncio.to_thread(timed_gets, url, cold_hours)
            warm = await asyncio.to_thread(timed_gets, url, list(hot) * (len(cold_hours) // len(hot) + 1))
        finally:
            server.terminate()
            server.wait(10)
    await nc.close()
    await redis.aclose()

    mib = 2**20
    print()
    print(f"History: {len(hours):,} hours, {events:,} events, {settings.partitions} partitions, 2 cores.")
    print()
    print("| Redis used_memory | value |")
    print("| --- | --- |")
    print(f"| no window (every hour in Redis) | {no_window / mib:.1f} MiB |")
    less = no_window / max(with_window, 1)
    print(f"| {args.window}-hour window | {with_window / mib:.1f} MiB ({less:.0f}x less) |")
    print(f"| {args.window}-hour window, after a full replay and eviction | {after_replay / mib:.1f} MiB |")
    print()
    print("| restore | seconds |")
    print("| --- | --- |")
    print(f"| FLUSHALL to every hot hour exact (snapshots + tail) | {restore:.2f} |")
    print(f"| `./just replay` of the whole log (baseline) | {full:.1f} |")
    print()
    print(f"| GET of one hour, {len(first)} reads each, one client | p50 ms | p99 ms |")
    print("| --- | --- | --- |")
    for name, values in (
        ("cold hour, first read (through to the snapshot store)", first),
        ("cold hour, read again (cached)", again),
        ("hot hour", warm),
    ):
        print(f"| {name} | {statistics.median(values):.2f} | {percentile(values, 0.99):.2f} |")


async def _at_least(count: Awaitable[int], wanted: int) -> bool:
    return await count >= wanted


async def _evicted(settings: Settings, redis: Redis, wanted: int) -> bool:
    return await cold_count(settings, redis) >= wanted


def _same(
    read: Callable[[Settings, Redis, NATS, range], Awaitable[list[HourTotals]]],
    settings: Settings,
    redis: Redis,
    nc: NATS,
    hours: range,
    expected: list[HourTotals],
) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        try:
            return await read(settings, redis, nc, hours) == expected
        except Exception:
            return False

    return probe


def main() -> None:
    parser = argparse.ArgumentParser(prog="./just bench-history", description=__doc__)
    parser.add_argument("--hours", type=int, default=10_000)
    parser.add_argument("--events-per-hour", type=int, default=1_000)
    parser.add_argument("--window", type=int, default=48)
    parser.add_argument("--reads", type=int, default=200)  # 800 entries: inside the 1,024 cached
    args = parser.parse_args()
    with own_servers() as (workdir, settings):
        # Raw events stay: what is measured is the snapshots, not compaction.
        settings = settings.replace(log_keep_s=10 * 365 * 86400.0)
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        asyncio.run(run(args, settings, workdir))


if __name__ == "__main__":
    main()
