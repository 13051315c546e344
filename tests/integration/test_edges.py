"""The edges of exactly-once: scoped and bounded dedup, and what replay must never do."""

from __future__ import annotations

import httpx
import pytest
from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from api.reader import HourTotals, Reader
from contract.hours import HOUR_MS
from contract.keys import Keys
from contract.schema import Batch, Event, Kind
from contract.settings import Settings
from projector.fold import Message, fold
from projector.replay import replay
from projector.store import Outcome, ProjectionStore
from tests.helpers import eventually

TS = 11 * HOUR_MS


async def truth_in_redis(redis: Redis, settings: Settings, hour: int) -> HourTotals:
    """What Redis holds for the hour in the live generation, past any read cache."""
    return await Reader(redis, Keys(settings.key_prefix), settings.partitions).hour(hour)


@pytest.mark.usefixtures("projector")
async def test_one_idempotency_key_from_two_users_is_two_events(
    client: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    for user in ("alice", "bob", "alice"):
        response = await client.post(
            f"/analytics?timestamp={TS}&user={user}&click", headers={"Idempotency-Key": "order-8812"}
        )
        assert response.status_code == 204
    expected = HourTotals(unique_users=2, clicks=2, impressions=0)
    assert await eventually(lambda: truth_in_redis(redis, settings, 11), lambda t: t == expected)


@pytest.mark.usefixtures("projector")
async def test_a_refused_duplicate_adds_neither_a_count_nor_a_user(
    client: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    key = {"Idempotency-Key": "retry-1"}
    assert (await client.post(f"/analytics?timestamp={TS}&user=carol&click", headers=key)).status_code == 204
    # The retry carries another hour; it is still the same request, so it must leave that hour alone.
    later = TS + HOUR_MS
    retry = await client.post(f"/analytics?timestamp={later}&user=carol&click", headers=key)
    assert retry.status_code == 204
    assert (await client.post(f"/analytics?timestamp={later}&user=dave&impression")).status_code == 204
    await eventually(lambda: truth_in_redis(redis, settings, 12), lambda t: t.impressions == 1)
    assert await truth_in_redis(redis, settings, 12) == HourTotals(1, 0, 1)
    assert await truth_in_redis(redis, settings, 11) == HourTotals(1, 1, 0)


async def test_two_idempotency_key_headers_are_a_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/analytics?timestamp=1&user=u&click",
        headers=[(b"Idempotency-Key", b"a"), (b"Idempotency-Key", b"b")],
    )
    assert response.status_code == 400
    assert response.text.startswith("Idempotency-Key: is given more than once")


@pytest.mark.usefixtures("projector")
async def test_retries_after_a_replay_count_once_and_leave_no_per_key_entries(
    client: httpx.AsyncClient, nc: NATS, redis: Redis, settings: Settings
) -> None:
    async def send(user: str, key: str) -> None:
        path = f"/analytics?timestamp={TS}&user={user}&impression"
        assert (await client.post(path, headers={"Idempotency-Key": key})).status_code == 204

    for i in range(20):
        await send(f"u{i}", f"k{i}")
    await eventually(lambda: truth_in_redis(redis, settings, 11), lambda t: t.impressions == 20)
    await replay(settings, nc, redis)
    assert await truth_in_redis(redis, settings, 11) == HourTotals(20, 0, 20)
    for i in range(20):
        await send(f"u{i}", f"k{i}")  # every retry lands after the replay
    await send("late", "k-late")
    await eventually(lambda: truth_in_redis(redis, settings, 11), lambda t: t.impressions == 21)
    assert await truth_in_redis(redis, settings, 11) == HourTotals(21, 0, 21)
    keys = Keys(settings.key_prefix)
    gen = int(await redis.get(keys.generation) or 0)
    members = sum([await redis.zcard(keys.dedup(gen, p)) for p in range(settings.partitions)])
    assert members == 21  # one entry per (user, key) inside the window, in per-partition sets
    assert not [k async for k in redis.scan_iter(match=f"{settings.key_prefix}:*idem*")]


async def test_dedup_memory_holds_only_the_keys_inside_the_window(redis: Redis, settings: Settings) -> None:
    store = ProjectionStore(redis, Keys(settings.key_prefix), dedup_window_s=1.0)
    gen = await store.current_generation()
    watermark = 0
    # 2,000 distinct keys, one per 10 ms of stream time: 20 s of stream, so about 100 inside a 1 s window.
    for seq in range(1, 201):
        at = seq * 100
        events = tuple(Event(TS, f"user{seq}-{i}", Kind.CLICK, key=f"k{seq}-{i}") for i in range(10))
        deltas = fold([Message(seq, Batch(events=events), stream_ms=at)])
        result = await store.apply(gen, 0, watermark, deltas)
        assert result.outcome is Outcome.APPLIED
        watermark = result.watermark
    assert await redis.zcard(store.keys.dedup(gen, 0)) <= 110
    assert await redis.hget(store.keys.counts(gen, 11, 0), "clicks") == b"2000"
