"""Reads split by partition (one script per partition, as on a Redis Cluster, unions counted in Python)
answer exactly as the single-node reads (one script over every partition), on one real Valkey: hours,
ranges (also those too long for one script), across a replay's switch and while partitions are on
different generations. Cold hours are compared in test_hot_window."""

from __future__ import annotations

import httpx
import pytest
from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from api.reader import SCRIPT_MAX_KEYS, HourTotals, Reader
from contract.hours import HOUR_MS
from contract.keys import Keys
from deploy.settings import Settings
from projector.projections.leases import Leases
from projector.replay.driver import replay
from tests.helpers import settle

pytestmark = pytest.mark.usefixtures("projector")

BASE = 493_900  # an hour index (2026-05-06T04:00Z)
HOURS = range(BASE, BASE + 5)


async def post_some(client: httpx.AsyncClient) -> None:
    for i, hour in enumerate(HOURS):
        for u in range(12 + 3 * i):  # users overlap between hours, and spread over every partition
            kind = "click" if u % 3 else "impression"
            path = f"/analytics?timestamp={hour * HOUR_MS + u}&user=user{u + 2 * i}&{kind}"
            assert (await client.post(path)).status_code == 204


def shapes() -> list[list[list[int]]]:
    day = list(range(BASE - 20, BASE + 4))
    long = [list(range(BASE - 24 * (d + 1), BASE - 24 * d)) for d in range(90)]  # 2,160 hours
    return [[[h] for h in HOURS], [day, [BASE + 4]], [*long, list(HOURS)]]


Answers = tuple[list[HourTotals], list[tuple[list[HourTotals], HourTotals]]]


async def both(redis: Redis, settings: Settings) -> tuple[Answers, Answers]:
    """Every answer as the single-node reader gives it, and as the split reader gives it."""
    keys = Keys(settings.key_prefix)
    found: list[Answers] = []
    for split in (False, True):
        await redis.script_flush()  # each mode loads its scripts itself (the split one in a pipeline)
        reader = Reader(redis, keys, settings.partitions, split_by_partition=split)
        hours = [await reader.hour(h) for h in [*HOURS, BASE - 100]]
        ranges = [await reader.buckets(shape) for shape in shapes()]
        found.append((hours, ranges))
    return found[0], found[1]


async def test_split_reads_answer_as_single_node_reads(
    client: httpx.AsyncClient, nc: NATS, redis: Redis, settings: Settings
) -> None:
    assert 2160 * settings.partitions > SCRIPT_MAX_KEYS  # the long range takes the pipelined path
    await post_some(client)
    await settle(nc, redis, settings)
    single, split = await both(redis, settings)
    assert single == split
    hours, ranges = single
    assert hours[0] == HourTotals(12, 8, 4)
    assert hours[-1] == HourTotals(0, 0, 0)
    assert ranges[0][1] == HourTotals(user_count(), 8 + 10 + 12 + 14 + 16, 4 + 5 + 6 + 7 + 8)

    # A replay switches every partition to a new generation: the same answers, both ways.
    await replay(settings, nc, redis)
    assert await both(redis, settings) == (single, split)

    # Mid-switch, partitions live in different generations: both ways read each partition's own.
    # The partition's lease is seized first (as a replay does), so its projector writes nothing there.
    keys = Keys(settings.key_prefix)
    leases = Leases(redis, keys, "test-switch", ttl_s=60)
    await leases.seize(0)
    live = await redis.get(keys.generation(0))
    await redis.set(keys.generation(0), 999_999)  # a generation with nothing in it
    try:
        single_then, split_then = await both(redis, settings)
        assert single_then == split_then
        assert single_then != single  # partition 0's counts are missing from both
    finally:
        await redis.set(keys.generation(0), live or 1)
        await leases.release(0)


def user_count() -> int:
    return len({u + 2 * i for i in range(len(HOURS)) for u in range(12 + 3 * i)})
