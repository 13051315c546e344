"""The edges of exactly-once: scoped and bounded dedup, and what replay must never do."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
from collections.abc import Awaitable, Callable

import httpx
import pytest
from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from api.reader import HourTotals
from contract.cells import Cell, CellLayout
from contract.hours import HOUR_MS, hour_token, partition_of, subject
from contract.keys import Keys
from contract.schema import Event, Kind, batch_of, encode
from deploy.servers import ROOT
from deploy.settings import Settings
from projector.projections.leases import Leases
from projector.projections.store import Outcome, ProjectionStore, SwapOutcome
from projector.replay.driver import replay
from projector.replay.reports import ReplayRefused
from tests.helpers import eventually, settings_env, settled, stored_hour
from tests.integration.conftest import Projectors
from tests.reference_fold import Message, fold

TS = 11 * HOUR_MS


def same_partition(a: str, b: str, settings: Settings) -> bool:
    return partition_of(a, settings.partitions) == partition_of(b, settings.partitions)


@pytest.mark.usefixtures("projector")
async def test_one_idempotency_key_from_two_users_is_two_events(
    client: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    # Two users of one partition: the dedup state is per partition, so only these tell a key scoped
    # to its user from one that is not.
    other = next(u for u in (f"user{i}" for i in range(100)) if same_partition(u, "alice", settings))
    for user in ("alice", other, "alice"):
        response = await client.post(
            f"/analytics?timestamp={TS}&user={user}&click", headers={"Idempotency-Key": "order-8812"}
        )
        assert response.status_code == 204
    # A marker after the retry, in the retry's partition: once it is applied, so is the retry.
    marker = await client.post(f"/analytics?timestamp={TS}&user=alice&impression")
    assert marker.status_code == 204
    await eventually(lambda: stored_hour(redis, settings, 11), lambda t: t.impressions == 1)
    assert await stored_hour(redis, settings, 11) == HourTotals(unique_users=2, clicks=2, impressions=1)


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
    # The marker is carol's too: same partition as the retry, so applied only after it.
    assert (await client.post(f"/analytics?timestamp={later}&user=carol&impression")).status_code == 204
    await eventually(lambda: stored_hour(redis, settings, 12), lambda t: t.impressions == 1)
    assert await stored_hour(redis, settings, 12) == HourTotals(1, 0, 1)
    assert await stored_hour(redis, settings, 11) == HourTotals(1, 1, 0)


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
    await eventually(lambda: stored_hour(redis, settings, 11), lambda t: t.impressions == 20)
    await replay(settings, nc, redis)
    assert await stored_hour(redis, settings, 11) == HourTotals(20, 0, 20)
    for i in range(20):
        await send(f"u{i}", f"k{i}")  # every retry lands after the replay
    await send("late", "k-late")
    # Every partition's watermark past its last event, retries included, then two reads.
    await settled(settings, lambda r: stored_hour(r, settings, 11), lambda t: t == HourTotals(21, 0, 21))
    keys = Keys(settings.key_prefix)
    gens = [int(await redis.get(keys.generation(p)) or 0) for p in range(settings.partitions)]
    members = sum([await redis.zcard(keys.dedup(gens[p], p)) for p in range(settings.partitions)])
    assert members == 21  # one entry per (user, key) inside the window, in per-partition sets
    assert not [k async for k in redis.scan_iter(match=f"{settings.key_prefix}:*idem*")]


async def test_dedup_memory_holds_only_the_keys_inside_the_window(redis: Redis, settings: Settings) -> None:
    store = ProjectionStore(
        redis, Keys(settings.key_prefix), dedup_window_s=1.0, partitions=settings.partitions
    )
    gen = await store.current_generation(0)
    watermark = 0
    # 2,000 distinct keys, one per 10 ms of stream time: 20 s of stream, so about 100 inside a 1 s window.
    for seq in range(1, 201):
        at = seq * 100
        events = tuple(Event(TS, f"user{seq}-{i}", Kind.CLICK, key=f"k{seq}-{i}") for i in range(10))
        deltas = fold([Message(seq, batch_of(events=events), stream_ms=at)])
        result = await store.apply(gen, 0, watermark, deltas)
        assert result.outcome is Outcome.APPLIED
        watermark = result.watermark
    # The last 1 s of stream time: 10 messages of 10 keys, and the message on the window's edge.
    assert 100 <= await redis.zcard(store.keys.dedup(gen, 0)) <= 110
    assert await redis.hget(CellLayout(store.keys).counts(Cell.of_hour(gen, 0, 11)), "clicks") == b"2000"


async def test_counts_never_decrease_while_a_replay_runs_under_load(
    client: httpx.AsyncClient, nc: NATS, redis: Redis, settings: Settings, projectors: Projectors
) -> None:
    await projectors.start()
    # History worth replaying, written straight to the stream in ingest's shape.
    js = nc.jetstream()
    history = 0
    for batch in range(150):
        by_partition: dict[int, list[Event]] = {}
        for i in range(40):
            user = f"h{batch}-{i}"
            by_partition.setdefault(partition_of(user, settings.partitions), []).append(
                Event(TS, user, Kind.CLICK)
            )
        for p, events in by_partition.items():
            await js.publish(subject(settings.subject_prefix, 11, p), encode(batch_of(events=tuple(events))))
            history += len(events)
    await eventually(lambda: stored_hour(redis, settings, 11), lambda t: t.clicks == history, timeout=60)

    async def replays() -> None:
        for _ in range(3):
            await replay(settings, nc, redis)

    seen, sent = await while_writing(client, redis, settings, replays)
    assert len(seen) > 20
    await ends_exact(settings, nc, redis, history, sent)


async def test_a_single_hour_replay_never_writes_into_a_generation_that_was_switched_out(
    redis: Redis, settings: Settings
) -> None:
    store = ProjectionStore.from_settings(redis, settings)
    gen = await store.current_generation(0)
    scratch = await store.new_generation()
    await redis.pfadd(CellLayout(store.keys).users(Cell.of_hour(scratch, 0, 11)), "rebuilt-user")
    leases = Leases(redis, store.keys, "single-hour", ttl_s=5)
    epochs = {p: str(await leases.seize(p)) for p in range(settings.partitions)}
    await store.switch_generation(await store.new_generation())  # a full replay finished meanwhile
    watermarks = dict.fromkeys(epochs, 0)
    assert await store.swap_hour(gen, scratch, 11, epochs, watermarks) is SwapOutcome.GENERATION_MOVED
    assert not await redis.exists(CellLayout(store.keys).users(Cell.of_hour(gen, 0, 11)))
    assert await redis.exists(CellLayout(store.keys).users(Cell.of_hour(scratch, 0, 11)))


@pytest.mark.usefixtures("projector")
async def test_generations_left_by_a_killed_replay_are_removed_by_the_next_replay(
    client: httpx.AsyncClient, nc: NATS, redis: Redis, settings: Settings
) -> None:
    assert (await client.post(f"/analytics?timestamp={TS}&user=keep&click")).status_code == 204
    await eventually(lambda: stored_hour(redis, settings, 11), lambda t: t.clicks == 1)
    store = ProjectionStore.from_settings(redis, settings)
    orphan = await store.new_generation()  # what a replay killed halfway leaves
    await redis.set(store.keys.watermark(orphan, 0), 5)
    await redis.pfadd(CellLayout(store.keys).users(Cell.of_hour(orphan, 0, 11)), "half-built")
    report = await replay(settings, nc, redis)
    assert not [k async for k in redis.scan_iter(match=store.keys.gen_pattern(orphan, 0))]
    assert await stored_hour(redis, settings, 11) == HourTotals(1, 1, 0)
    assert report.generation > orphan


async def test_a_projector_removes_orphaned_generations_at_start_unless_a_replay_runs(
    client: httpx.AsyncClient, redis: Redis, settings: Settings, projectors: Projectors
) -> None:
    store = ProjectionStore.from_settings(redis, settings)
    await store.current_generation(0)
    orphan = await store.new_generation()
    await redis.set(store.keys.watermark(orphan, 0), 5)
    assert await store.lock("a-running-replay", 30)
    await projectors.start()
    await eventually(lambda: client.get("/readyz"), lambda r: r.status_code == 200)
    assert await redis.exists(store.keys.watermark(orphan, 0))  # a replay holds it: left alone
    await projectors.stop_all()
    await store.unlock("a-running-replay")
    await projectors.start()
    await eventually(lambda: redis.exists(store.keys.watermark(orphan, 0)), lambda n: n == 0)


async def test_only_one_replay_runs_at_a_time(
    client: httpx.AsyncClient, nc: NATS, redis: Redis, settings: Settings
) -> None:
    store = ProjectionStore.from_settings(redis, settings)
    assert await store.lock("someone-else", 30)
    with pytest.raises(ReplayRefused, match="another replay is running"):
        await replay(settings, nc, redis)
    await store.unlock("someone-else")


async def test_duplicates_inside_one_apply_count_once(redis: Redis, settings: Settings) -> None:
    store = ProjectionStore.from_settings(redis, settings)
    gen = await store.current_generation(0)
    events = (
        Event(TS, "ann", Kind.CLICK, key="k1"),
        Event(TS, "ann", Kind.CLICK, key="k1"),  # the retry, in the same batch
        Event(TS, "bob", Kind.CLICK, key="k1"),  # another user's k1
        Event(TS + HOUR_MS, "ann", Kind.IMPRESSION, key="k1"),  # a retry naming another hour
        Event(TS, "ann", Kind.IMPRESSION, key="k2"),
    )
    result = await store.apply(gen, 0, 0, fold([Message(1, batch_of(events=events), stream_ms=5)]))
    assert result.outcome is Outcome.APPLIED
    assert await stored_hour(redis, settings, 11) == HourTotals(2, 2, 1)
    assert await stored_hour(redis, settings, 12) == HourTotals(0, 0, 0)


async def test_an_apply_with_more_keyed_events_than_lua_can_unpack_at_once(
    redis: Redis, settings: Settings
) -> None:
    store = ProjectionStore.from_settings(redis, settings)
    gen = await store.current_generation(0)
    events = tuple(Event(TS, f"user{i}", Kind.CLICK, key=f"k{i}") for i in range(9_000))
    retried = events[:3_000]  # the same requests again, in the same apply
    deltas = fold([Message(1, batch_of(events=events)), Message(2, batch_of(events=retried))])
    assert (await store.apply(gen, 0, 0, deltas)).outcome is Outcome.APPLIED
    assert (await stored_hour(redis, settings, 11)).clicks == 9_000


async def test_counts_never_decrease_while_a_single_hour_replay_runs_under_load(
    client: httpx.AsyncClient, nc: NATS, redis: Redis, settings: Settings, projectors: Projectors
) -> None:
    await projectors.start()
    history = 0
    for i in range(200):
        assert (await client.post(f"/analytics?timestamp={TS}&user=h{i}&click")).status_code == 204
        history += 1
    await eventually(lambda: stored_hour(redis, settings, 11), lambda t: t.clicks == history, timeout=60)

    async def replays() -> None:
        # `./just replay YYYYMMDDHH`, as an operator runs it, into the hour being written.
        command = [sys.executable, "-m", "projector", "replay", hour_token(11)]
        for _ in range(3):
            done_once = await asyncio.to_thread(
                subprocess.run,
                command,
                env=settings_env(settings),
                cwd=ROOT,
                capture_output=True,
                timeout=120,
            )
            assert done_once.returncode == 0, done_once.stderr.decode()

    seen, sent = await while_writing(client, redis, settings, replays)
    assert len(seen) > 20
    assert sent > 0
    await ends_exact(settings, nc, redis, history, sent)


async def while_writing(
    client: httpx.AsyncClient, redis: Redis, settings: Settings, replays: Callable[[], Awaitable[None]]
) -> tuple[list[tuple[int, int]], int]:
    """`replays()` while impressions are POSTed into hour 11 and Redis is read as fast as it answers;
    fails if a count ever went down. Returns what was seen and how many impressions were sent."""
    done = asyncio.Event()
    sent = 0
    seen: list[tuple[int, int]] = []

    async def write() -> None:
        nonlocal sent
        while not done.is_set():
            sent += 1
            assert (
                await client.post(f"/analytics?timestamp={TS}&user=live{sent}&impression")
            ).status_code == 204

    async def watch() -> None:
        while not done.is_set():
            t = await stored_hour(redis, settings, 11)
            seen.append((t.clicks, t.impressions))
            await asyncio.sleep(0)

    async def run() -> None:
        try:
            await replays()
        finally:
            done.set()

    await asyncio.gather(write(), watch(), run())
    decreases = [(a, b) for a, b in itertools.pairwise(seen) if b[0] < a[0] or b[1] < a[1]]
    assert not decreases, f"counts went backwards {len(decreases)} times, e.g. {decreases[:3]}"
    return seen, sent


async def ends_exact(settings: Settings, nc: NATS, redis: Redis, history: int, sent: int) -> None:
    """Settled, hour 11 holds the history's clicks and the impressions sent during the replays, each
    once; its users are theirs, within HyperLogLog's error."""
    final = await settled(
        settings,
        lambda r: stored_hour(r, settings, 11),
        lambda t: (t.clicks, t.impressions) == (history, sent),
        nc=nc,
        redis=redis,
    )
    assert abs(final.unique_users - (history + sent)) <= 0.02 * (history + sent)  # HyperLogLog
