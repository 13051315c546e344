"""`./just bench-scripts`: how long one script holds Redis at the documented limits (Valkey's SLOWLOG):
range reads of up to a leap year of hours (ANALYTICS_RANGE_MAX_BUCKETS) in UTC, in a rolled-up zone and
in one without day rollups, read in bounded steps and, for comparison, in one script; and the apply of
a replay-sized fetch.

Seeds a year and a bit of hours in every partition (`--users` users an hour a partition) through the
store's own apply into a scratch Valkey, with UTC and Asia/Kolkata day rollups, then prints per read:
the longest script, the number of scripts, and the read's median wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

from redis.asyncio import Redis

from api import range_read
from api.range_read import RangeReads
from api.ranges import parse_range
from api.reader import Reader
from contract.buckets import day_phases
from contract.hours import HOUR_MS
from contract.keys import Keys
from contract.schema import Kind
from projector.fold.deltas import Deltas, HourDelta, Keyed
from projector.projections.store import ProjectionStore
from tests.bench.servers import scratch_servers

PARTITIONS = 4
ZONES = ("UTC", "Asia/Kolkata")


async def seed(store: ProjectionStore, first: int, hours: int, users: int) -> None:
    phases = day_phases(ZONES)
    for p in range(PARTITIONS):
        await store.record_phases(1, p, phases)
        watermark = 0
        for h in range(first, first + hours):
            names = {f"u{p}-{h % 500}-{i}" for i in range(users)}
            delta = HourDelta.of(names, users, users, quarter=(h % 4))
            result = await store.apply(
                1, p, watermark, Deltas(hours={h: delta}, last_seq=watermark + 1), live=False, phases=phases
            )
            watermark = result.watermark


async def longest(redis: Redis, run: Any) -> tuple[float, int, float]:
    """(the longest EVALSHA in ms, how many ran, the wall time in ms) of one call of `run`."""
    await redis.slowlog_reset()
    started = time.perf_counter()
    await run()
    wall = (time.perf_counter() - started) * 1000
    entries = [e for e in await redis.slowlog_get(100_000) if b"EVALSHA" in (e["command"] or b"").upper()]
    return max((e["duration"] / 1000 for e in entries), default=0.0), len(entries), wall


async def main_async(args: argparse.Namespace) -> None:
    with scratch_servers() as scratch:
        redis: Redis = Redis.from_url(scratch.settings.redis_url)
        keys = Keys("bench")
        store = ProjectionStore(redis, keys, partitions=PARTITIONS)
        now = int(time.time() * 1000) // HOUR_MS * HOUR_MS
        hours = args.hours
        first = now // HOUR_MS - hours
        started = time.perf_counter()
        await seed(store, first, hours, args.users)
        print(f"seeded {hours} hours x {PARTITIONS} partitions in {time.perf_counter() - started:.1f} s")
        await redis.config_set("slowlog-log-slower-than", 0)
        await redis.config_set("slowlog-max-len", 100_000)
        reader = Reader(redis, keys, PARTITIONS)
        default_step = range_read.STEP_CELLS
        reads: list[tuple[str, str, str, int]] = [
            ("24 h by hour", "UTC", "hour", 24),
            ("a year by hour", "UTC", "hour", hours - 48),
            ("a year by day", "Asia/Kolkata", "day", hours - 48),
            ("a year by hour, no rollups", "Asia/Kathmandu", "hour", hours - 48),
        ]
        print(f"{'read':34} {'steps':>24} {'one script':>24}")
        for name, zone, granularity, span in reads:
            end = now - 24 * HOUR_MS
            query = {
                "from": [str(end - span * HOUR_MS)],
                "to": [str(end)],
                "tz": [zone],
                "granularity": [granularity],
            }
            rows = [[s] for s in parse_range(query, hours).spans]
            cells = []
            for step_cells in (default_step, 10**9):
                range_read.STEP_CELLS = step_cells
                ranges = RangeReads(redis, keys, PARTITIONS, None, False)
                timings = [
                    await longest(redis, partial(ranges.read, rows, reader._range_calls)) for _ in range(5)
                ]
                worst = max(t[0] for t in timings)
                count = timings[-1][1]
                wall = statistics.median(t[2] for t in timings)
                cells.append(f"{worst:6.2f} ms x{count:<4} {wall:6.1f} ms")
            range_read.STEP_CELLS = default_step
            print(f"{name + ' (' + zone + ')':34} {cells[0]:>24} {cells[1]:>24}")
        apply_ms = await big_apply(redis, store, first, args.fetch_events)
        print(f"the apply of one replay fetch ({args.fetch_events} events, 4 keyed in 10): {apply_ms:.2f} ms")
        await redis.aclose()


async def big_apply(redis: Redis, store: ProjectionStore, first: int, events: int) -> float:
    """The longest script of one apply of `events` events spread over one hour's quarters, 40% keyed."""
    hour = first - 10
    delta = HourDelta.of({f"big-{i}" for i in range(events // 2)}, events // 4, events // 4, quarter=0)
    keyed = [Keyed(f"k{i}", f"big-{i}", i, hour, Kind.CLICK, i % 4) for i in range(events * 4 // 10)]
    deltas = Deltas(hours={hour: delta}, keyed=keyed, last_seq=1, last_ms=events)
    worst, _, _ = await longest(
        redis, lambda: store.apply(9, 0, 0, deltas, live=False, phases=day_phases(ZONES))
    )
    return worst


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=8784 + 48)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--fetch-events", type=int, default=6000)
    asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
