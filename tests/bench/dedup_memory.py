"""Redis memory of idempotency dedup after replaying keyed events: what the window bounds.

Run: ./just bench-dedup [--events N]   (own nats-server and valkey-server on free ports, temp dirs)

Publishes N keyed events (every one a distinct user and key, 1,000 per message, as group commit
writes them under load), replays them into Redis with the default 600 s window and with a 1 s one,
and reports `used_memory` and the dedup sets' own size after each.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import nats
from redis.asyncio import Redis

from contract.hours import hour_of, partition_of, subject, system_now_ms
from contract.keys import Keys
from contract.schema import Event, Kind, batch_of, encode
from deploy.settings import Settings
from projector.log.stream_config import ensure_stream
from projector.replay.driver import replay
from tests.bench.servers import own_servers

PER_MESSAGE = 1000


async def publish(settings: Settings, events: int) -> float:
    nc = await nats.connect(settings.nats_url)
    js = nc.jetstream()
    await ensure_stream(nc, settings)
    now = system_now_ms()
    started = time.perf_counter()
    pending: dict[int, list[Event]] = {}
    for i in range(events):
        user = f"user-{i}"
        p = partition_of(user, settings.partitions)
        bucket = pending.setdefault(p, [])
        bucket.append(Event(now, user, Kind.CLICK, key=f"order-{i:09d}"))
        if len(bucket) == PER_MESSAGE:
            await js.publish(
                subject(settings.subject_prefix, hour_of(now), p), encode(batch_of(events=tuple(bucket)))
            )
            bucket.clear()
    for p, bucket in pending.items():
        if bucket:
            await js.publish(
                subject(settings.subject_prefix, hour_of(now), p), encode(batch_of(events=tuple(bucket)))
            )
    seconds = time.perf_counter() - started
    await nc.close()
    return seconds


async def measure(settings: Settings) -> tuple[float, int, int, int]:
    """(replay seconds, used_memory after, dedup sets' bytes, dedup entries) for a fresh Redis."""
    redis = Redis.from_url(settings.redis_url, socket_timeout=60)
    await redis.flushall(asynchronous=False)
    for _ in range(300):  # a bench polling the server: let the flush free its memory first
        if not int((await redis.info("memory")).get("lazyfree_pending_objects", 0)):
            break
        await asyncio.sleep(0.1)
    base = int((await redis.info("memory"))["used_memory"])
    nc = await nats.connect(settings.nats_url)
    report = await replay(settings, nc, redis)
    await nc.close()
    keys = Keys(settings.key_prefix)
    gen = report.generation
    zset_bytes = entries = 0
    for p in range(settings.partitions):
        zset_bytes += int(await redis.memory_usage(keys.dedup(gen, p), samples=0) or 0)
        entries += int(await redis.zcard(keys.dedup(gen, p)))
    used = int((await redis.info("memory"))["used_memory"]) - base
    await redis.aclose()
    return report.seconds, used, zset_bytes, entries


async def run(events: int, settings: Settings) -> None:
    took = await publish(settings, events)
    print(f"published {events:,} keyed events in {took:.1f}s of stream time", flush=True)
    rows = []
    for window in (600.0, 1.0):
        seconds, used, zset, entries = await measure(settings.replace(dedup_window_s=window))
        rows.append((window, seconds, used, zset, entries))
    print()
    print("| dedup window | replay | Redis used_memory | dedup sets | entries kept | bytes per entry |")
    print("| --- | --- | --- | --- | --- | --- |")
    for window, seconds, used, zset, entries in rows:
        per = zset / entries if entries else 0
        print(
            f"| {window:g} s | {seconds:.1f} s | {used / 2**20:.1f} MiB | {zset / 2**20:.1f} MiB "
            f"| {entries:,} | {per:.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="./just bench-dedup", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    with own_servers() as (_, settings):
        asyncio.run(run(args.events, settings))


if __name__ == "__main__":
    main()
