"""`./just bench-scripts`: how long one script holds Redis at the documented limits (Valkey's SLOWLOG):
range reads of up to a leap year of hours (ANALYTICS_RANGE_MAX_BUCKETS) in UTC, in a rolled-up zone and
in one without day rollups, read in bounded steps and, for comparison, in one script; and the apply of
a projector's largest fetch, applied in runs as the worker applies it.

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
from contract.hours import HOUR_MS, subject
from contract.keys import Keys
from contract.schema import Event, Kind, batch_of, encode
from projector.fold.deltas import Deltas, HourDelta
from projector.fold.digest import digest
from projector.log.fetched import APPLY_MAX_BYTES, Fetched
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
    """(the longest EVALSHA in ms, how many ran, the wall time in ms) of one call of `run`. SLOWLOG keeps
    only scripts over 1 ms (a log of every command would itself cost Redis milliseconds to reset)."""
    await redis.slowlog_reset()
    before = await evalsha_calls(redis)
    started = time.perf_counter()
    await run()
    wall = (time.perf_counter() - started) * 1000
    count = await evalsha_calls(redis) - before
    entries = [e for e in await redis.slowlog_get(1000) if b"EVALSHA" in (e["command"] or b"").upper()]
    return max((e["duration"] / 1000 for e in entries), default=0.0), count, wall


async def evalsha_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


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
        await redis.config_set("slowlog-log-slower-than", 1000)
        await redis.config_set("slowlog-max-len", 1000)
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
        # The first write after the seed holds Redis longer whatever it writes (a fetch of 20 messages
        # took as long as one of 1,000): it is reported apart from the fetches after it.
        found = [
            await fetch_applies(redis, store, first - 10 * (1 + k), args.fetch_messages, 9 + k)
            for k in range(6)
        ]
        worst, applies = max(w for w, _ in found[1:]), found[-1][1]
        print(
            f"a fetch of {args.fetch_messages} messages of 4 events (1 keyed in 10), in {applies} applies of "
            f"at most {APPLY_MAX_BYTES // 1024} KiB of payload, 5 fetches: the longest {worst:.2f} ms "
            f"(median {statistics.median(w for w, _ in found[1:]):.2f} ms; the first write after the seed "
            f"{found[0][0]:.2f} ms)"
        )
        await redis.aclose()


async def fetch_applies(
    redis: Redis, store: ProjectionStore, hour: int, messages: int, gen: int
) -> tuple[float, int]:
    """The longest apply script of one live-shaped fetch (`messages` messages of 4 events, one keyed in
    ten, users new to the hour) folded and applied into a fresh generation `gen` in Fetched.runs as the
    worker does: (ms, applies)."""
    prefix, subjects, payloads, seqs, stamps = "analytics.events", [], [], [], []
    for m in range(messages):
        events = []
        for e in range(4):
            n = m * 4 + e
            key = f"k{n}" if n % 10 == 0 else None
            events.append(Event(hour * HOUR_MS + n % HOUR_MS, f"fetch-{n % 3000}", Kind.CLICK, key))
        subjects.append(subject(prefix, hour, 0))
        payloads.append(encode(batch_of(events=tuple(events))))
        seqs.append(m + 1)
        stamps.append(hour * HOUR_MS + m)
    fetched = Fetched()
    fetched.subjects, fetched.payloads, fetched.seqs, fetched.stamps = subjects, payloads, seqs, stamps
    watermark, phases = 0, day_phases(ZONES)

    async def run() -> None:
        nonlocal watermark
        for part in fetched.runs():
            done = digest(
                part.subjects,
                part.payloads,
                part.seqs,
                part.stamps,
                prefix=prefix,
                partitions=1,
                after=watermark,
            )
            watermark = (
                await store.apply(gen, 0, watermark, done.deltas, live=False, phases=phases)
            ).watermark

    worst, applies, _ = await longest(redis, run)
    return worst, applies


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=8784 + 48)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--fetch-messages", type=int, default=1000, help="a projector fetch's most")
    asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
