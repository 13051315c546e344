"""Redis bytes and apply CPU of one busy hour (part of `./just bench-ranges`): the same events projected by
another commit's projector and by this checkout's, each into its own fresh servers.

The hour's events go straight to the stream (one message per partition and `--per-message` events, as
group commit makes them under load). Each side's projector first catches up on one warm-up event, then
its CPU and Redis's are sampled around the busy hour alone; afterwards `MEMORY USAGE` of every cell
key of the hour: the hour's own keys, its four quarter-hours' and the day rollups it belongs to.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nats
from redis.asyncio import Redis

from contract.buckets import day_tokens, quarter_token
from contract.cells import Cell, CellLayout
from contract.hours import HOUR_MS, hour_token, partition_of, subject
from contract.keys import Keys
from contract.schema import Event, Kind, batch_of, encode
from deploy.settings import Settings
from tests.bench.commits import tree_env
from tests.bench.history import caught_up
from tests.bench.run import process
from tests.bench.servers import scratch_servers
from tests.helpers import settings_env


@dataclass
class Side:
    name: str
    projector_cpu_s: float = 0.0
    redis_cpu_s: float = 0.0
    bytes: dict[str, int] = field(default_factory=dict)
    """MEMORY USAGE summed over partitions: "hour", "quarters", "days"."""


def busy_events(hour: int, events: int, users: int, partitions: int) -> dict[int, list[Event]]:
    """`events` events of `users` users at random instants of `hour` (one in four a click), by partition,
    in time order."""
    rng = random.Random(22)
    names = [f"busy-{i}" for i in range(users)]
    by_partition: dict[int, list[Event]] = {}
    for i in range(events):
        user = names[i % users]
        ts = hour * HOUR_MS + rng.randrange(HOUR_MS)
        kind = Kind.CLICK if i % 4 == 0 else Kind.IMPRESSION
        by_partition.setdefault(partition_of(user, partitions), []).append(Event(ts, user, kind))
    for events_of in by_partition.values():  # as they arrive: a message holds events close in time
        events_of.sort(key=lambda e: e.ts)
    return by_partition


async def publish(
    settings: Settings, hour: int, by_partition: dict[int, list[Event]], per_message: int
) -> None:
    nc = await nats.connect(settings.nats_url)
    js = nc.jetstream()
    pending = []
    for p, events in by_partition.items():
        for i in range(0, len(events), per_message):
            payload = encode(batch_of(tuple(events[i : i + per_message])))
            pending.append(await js.publish_async(subject(settings.subject_prefix, hour, p), payload))
    await asyncio.gather(*pending)
    await nc.close()


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def redis_cpu_s(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def until_caught_up(settings: Settings, redis: Redis, timeout: float = 600) -> None:
    nc = await nats.connect(settings.nats_url)
    try:
        deadline = time.monotonic() + timeout
        while not await caught_up(settings, redis, nc):
            if time.monotonic() > deadline:
                raise TimeoutError("the projector did not catch up")
            await asyncio.sleep(0.05)
    finally:
        await nc.close()


async def cell_bytes(settings: Settings, redis: Redis, hour: int) -> dict[str, int]:
    keys = Keys(settings.key_prefix)
    days = {t for q in range(4) for t in day_tokens(hour, q, settings.day_phases)}
    kinds = {"hour": [hour_token(hour)], "quarters": [quarter_token(hour, q) for q in range(4)], "days": days}
    out = dict.fromkeys(kinds, 0)
    for p in range(settings.partitions):
        gen = keys.live_generation(await redis.get(keys.generation(p)))
        for kind, tokens in kinds.items():
            for token in tokens:
                for key in (
                    CellLayout(keys).users(Cell(gen, p, token)),
                    CellLayout(keys).counts(Cell(gen, p, token)),
                ):
                    out[kind] += int(await redis.memory_usage(key, samples=0) or 0)
    return out


async def measure(
    settings: Settings, pid: int, hour: int, by_partition: dict[int, list[Event]], per_message: int
) -> Side:
    side = Side("")
    redis = Redis.from_url(settings.redis_url)
    try:
        warm = {p: [Event((hour - 48) * HOUR_MS, e[0].user, Kind.CLICK)] for p, e in by_partition.items()}
        await publish(settings, hour - 48, warm, 1)
        await until_caught_up(settings, redis)
        cpu, rcpu = process_cpu_s(pid), await redis_cpu_s(redis)
        await publish(settings, hour, by_partition, per_message)
        await until_caught_up(settings, redis)
        side.projector_cpu_s = process_cpu_s(pid) - cpu
        side.redis_cpu_s = await redis_cpu_s(redis) - rcpu
        side.bytes = await cell_bytes(settings, redis, hour)
    finally:
        await redis.aclose()
    return side


def run_side(
    name: str, tree: Path, settings: Settings, hour: int, events: int, users: int, per_message: int
) -> Side:
    """Fresh servers, `tree`'s projector, the busy hour; what it cost."""
    with scratch_servers("hourglass-busy-") as scratch:
        config = scratch.settings.replace(
            day_zones=settings.day_zones, snapshot_interval_s=settings.snapshot_interval_s
        )
        env = settings_env(config)
        subprocess.run([sys.executable, "-m", "projector", "stream"], env=env, check=True, timeout=60)
        by_partition = busy_events(hour, events, users, config.partitions)
        log = scratch.workdir / "log"
        with process([sys.executable, "-m", "projector", "run"], tree_env(tree, env), log, cwd=tree) as proj:
            try:
                side = asyncio.run(measure(config, proj.pid, hour, by_partition, per_message))
            except TimeoutError:
                print(log.read_text()[-3000:], file=sys.stderr)
                raise
        side.name = name
        return side


def report(sides: list[Side], events: int, users: int, zones: str) -> None:
    print(f"Busy hour: {events:,} events of {users:,} users in one UTC hour, day zones {zones}")
    print(
        "| side | hour keys | + 4 quarters | day rollups | factor (days as 1/24) | factor (its days hold only"
        " it) | projector CPU µs/event | Redis CPU µs/event |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for s in sides:
        hour, quarters, days = s.bytes["hour"], s.bytes["quarters"], s.bytes["days"]
        shared = (hour + quarters + days / 24) / hour
        alone = (hour + quarters + days) / hour
        print(
            f"| {s.name} | {hour:,} B | {quarters:,} B | {days:,} B | {shared:.2f}x | {alone:.2f}x"
            f" | {s.projector_cpu_s / events * 1e6:.1f} | {s.redis_cpu_s / events * 1e6:.1f} |"
        )
    if len(sides) == 2 and sides[0].redis_cpu_s and sides[0].projector_cpu_s:
        base, head = sides
        print(
            f"apply cost head/base: projector CPU {head.projector_cpu_s / base.projector_cpu_s:.2f}x,"
            f" Redis CPU {head.redis_cpu_s / base.redis_cpu_s:.2f}x"
        )
