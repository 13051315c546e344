"""The projector against real servers: exactly-once apply, self-healing, and replay == live."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from api.reader import HourTotals, Reader
from contract.cells import Cell, CellLayout
from contract.hours import HOUR_MS, partition_of, system_now_ms
from contract.keys import Keys
from contract.schema import Event, Kind, batch_of
from contract.stream import consumer_name
from deploy.settings import Settings
from projector.live.balancer import run_projector
from projector.log import fetched
from projector.log.consumer_position import position_consumer
from projector.projections.store import ApplyResult, Outcome, ProjectionStore
from projector.replay.driver import replay
from projector.replay.single_hour import replay_hour
from tests.helpers import eventually, settled
from tests.integration.workload import Truth, mixed_events, parse_text, post_path
from tests.reference_fold import Message, fold, read


async def answers(client: httpx.AsyncClient, hours: list[int]) -> dict[int, tuple[int, int, int]]:
    out = {}
    for hour in hours:
        response = await client.get(f"/analytics?timestamp={hour * HOUR_MS}")
        out[hour] = parse_text(response.text)
    return out


async def stored(redis: Redis, settings: Settings, hours: list[int]) -> dict[int, tuple[int, int, int]]:
    """What Redis holds in the live generation, past every read cache: where a test means Redis state."""
    reader = Reader(redis, Keys(settings.key_prefix), settings.partitions)
    out = {}
    for hour in hours:
        t = await reader.hour(hour)
        out[hour] = (t.unique_users, t.clicks, t.impressions)
    return out


async def post_workload(client: httpx.AsyncClient, n: int, seed: int = 1) -> Truth:
    truth = Truth()
    for ts, user, kind in mixed_events(system_now_ms(), n, seed):
        assert (await client.post(post_path(ts, user, kind))).status_code == 204
        truth.add(ts, user, kind)
    return truth


def counts_match(truth: Truth) -> object:
    def check(got: dict[int, tuple[int, int, int]]) -> bool:
        return all(got[h][1:] == truth.text(h)[1:] for h in truth.hours())

    return check


@pytest.fixture
async def store(redis: Redis, settings: Settings) -> ProjectionStore:
    return ProjectionStore.from_settings(redis, settings)


async def test_redelivered_batch_is_not_counted_twice(store: ProjectionStore) -> None:
    gen = await store.current_generation(0)
    deltas = fold([Message(1, batch_of(events=(Event(1, "a", Kind.CLICK), Event(2, "b", Kind.IMPRESSION))))])
    first = await store.apply(gen, 0, 0, deltas)
    again = await store.apply(gen, 0, 0, deltas)
    assert first.outcome is Outcome.APPLIED
    assert again.outcome is Outcome.WATERMARK_MOVED
    assert again.watermark == 1
    assert await store.watermark(gen, 0) == 1
    redis = store._redis
    assert await redis.hgetall(CellLayout(store.keys).counts(Cell.of_hour(gen, 0, 0))) == {
        b"clicks": b"1",
        b"impressions": b"1",
    }


async def test_apply_into_a_stale_generation_is_refused(store: ProjectionStore) -> None:
    gen = await store.current_generation(0)
    deltas = fold([Message(1, batch_of(events=(Event(1, "a", Kind.CLICK),)))])
    result = await store.apply(gen + 1, 0, 0, deltas)
    assert result.outcome is Outcome.GENERATION_MOVED


async def test_crash_between_apply_and_ack_counts_each_event_once(
    settings: Settings, client: httpx.AsyncClient, store: ProjectionStore, redis: Redis
) -> None:
    truth = await post_workload(client, 120)
    own = await nats.connect(settings.nats_url)
    js = own.jetstream()
    # A projector that applied its first fetch of every partition (a few messages, not all), then died
    # before acking: the restart gets those messages again, and the rest for the first time.
    for p in range(settings.partitions):
        gen = await store.current_generation(p)
        await position_consumer(js, settings, p, 0, 50)
        sub = await js.pull_subscribe_bind(durable=consumer_name(p), stream=settings.stream_name)
        msgs = await sub.fetch(CRASHED_FETCH, timeout=2)
        assert len(msgs) == CRASHED_FETCH  # each partition has more than that: the restart has work to do
        result = await store.apply(gen, p, 0, fold(read(m, settings).message for m in msgs))
        assert result.outcome is Outcome.APPLIED
        await sub.unsubscribe()
    await own.close()
    behind = await stored(redis, settings, truth.hours())
    assert sum(c + i for _, c, i in behind.values()) == CRASHED_FETCH * settings.partitions

    stop = asyncio.Event()
    restarted = await nats.connect(settings.nats_url)
    task = asyncio.create_task(run_projector(settings, restarted, redis, stop))
    try:
        await settled(settings, lambda r: stored(r, settings, truth.hours()), counts_match(truth), timeout=30)  # type: ignore[arg-type]
    finally:
        stop.set()
        await task
        await restarted.close()


CRASHED_FETCH = 5
"""Messages the crashed projector applied per partition (one event each: the workload posts one by one)."""


@pytest.mark.usefixtures("projector")
async def test_wiped_redis_is_rebuilt_from_the_stream_without_being_asked(
    settings: Settings, client: httpx.AsyncClient, redis: Redis
) -> None:
    truth = await post_workload(client, 150, seed=3)
    before = await eventually(lambda: answers(client, truth.hours()), counts_match(truth))  # type: ignore[arg-type]
    keys = [k async for k in redis.scan_iter(match=f"{settings.key_prefix}:*")]
    assert keys
    await redis.delete(*keys)  # this test's share of a FLUSHALL
    assert await stored(redis, settings, truth.hours()) != before  # really gone
    after = await settled(settings, lambda r: stored(r, settings, truth.hours()), counts_match(truth))  # type: ignore[arg-type]
    assert after == before


@pytest.mark.usefixtures("projector")
async def test_fetches_are_applied_in_bounded_runs_and_count_each_event_once(
    settings: Settings, client: httpx.AsyncClient, nc: NATS, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fetch is folded and applied in runs of at most APPLY_MAX_BYTES, each moving the watermark:
    here one message a run, live, in a rebuild after a wipe, and in a replay; every count stays exact."""
    monkeypatch.setattr(fetched, "APPLY_MAX_BYTES", 1)
    applies: list[int] = []
    real = ProjectionStore.apply

    async def counting(self: ProjectionStore, *args: Any, **kwargs: Any) -> ApplyResult:
        applies.append(1)
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(ProjectionStore, "apply", counting)
    truth = await post_workload(client, 150, seed=6)
    live = await settled(settings, lambda r: stored(r, settings, truth.hours()), counts_match(truth))  # type: ignore[arg-type]
    keys = [k async for k in redis.scan_iter(match=f"{settings.key_prefix}:*")]
    await redis.delete(*keys)  # the rebuild fetches every message of a partition at once
    rebuilt = await settled(settings, lambda r: stored(r, settings, truth.hours()), counts_match(truth))  # type: ignore[arg-type]
    assert rebuilt == live
    report = await replay(settings, nc, redis)
    assert report.events == 150
    assert await stored(redis, settings, truth.hours()) == live
    messages = (await nc.jetstream().stream_info(settings.stream_name)).state.messages
    assert len(applies) >= 2 * messages  # each message applied alone in the rebuild and in the replay


@pytest.mark.usefixtures("projector")
async def test_a_partition_that_lost_its_keys_is_rebuilt_alone_without_being_asked(
    settings: Settings, client: httpx.AsyncClient, redis: Redis
) -> None:
    # As when the cluster shard holding partition 0 lost its data: its generation pointer is gone too.
    truth = await post_workload(client, 150, seed=4)
    before = await eventually(lambda: answers(client, truth.hours()), counts_match(truth))  # type: ignore[arg-type]
    keys = Keys(settings.key_prefix)
    gen = int(await redis.get(keys.generation(1)) or 0)
    others = {p: await redis.get(keys.fence(p)) for p in range(1, settings.partitions)}
    lost = [k async for k in redis.scan_iter(match=f"{settings.key_prefix}:{Keys.tag(0)}:*")]
    assert keys.generation(0).encode() in lost
    await redis.delete(*lost)
    assert await stored(redis, settings, truth.hours()) != before  # really gone
    after = await settled(settings, lambda r: stored(r, settings, truth.hours()), counts_match(truth))  # type: ignore[arg-type]
    assert after == before
    assert {p: await redis.get(keys.fence(p)) for p in others} == others  # the rest went on, same leases
    assert all([await redis.get(keys.generation(p)) == str(gen).encode() for p in others])


@pytest.mark.usefixtures("projector")
async def test_replay_ends_with_exactly_the_live_answers(
    settings: Settings, client: httpx.AsyncClient, nc: NATS, redis: Redis
) -> None:
    truth = await post_workload(client, 300, seed=5)
    live = await eventually(lambda: answers(client, truth.hours()), counts_match(truth))  # type: ignore[arg-type]
    report = await replay(settings, nc, redis)
    assert report.events == 300
    assert await stored(redis, settings, truth.hours()) == live
    # The live projector follows the new generation: later events still count.
    await client.post(post_path(truth.hours()[-1] * HOUR_MS, "late-user", "click"))
    truth.add(truth.hours()[-1] * HOUR_MS, "late-user", "click")
    await eventually(lambda: answers(client, truth.hours()), counts_match(truth))  # type: ignore[arg-type]
    keys = Keys(settings.key_prefix)
    for p in range(settings.partitions):
        assert await redis.get(keys.generation(p)) == str(report.generation).encode()
    stale = [k async for k in redis.scan_iter(match=f"{settings.key_prefix}:*:g{report.previous}:*")]
    assert stale == []


@pytest.mark.usefixtures("projector")
async def test_undecodable_message_is_skipped_and_does_not_stop_the_partition(
    settings: Settings, client: httpx.AsyncClient, nc: NATS
) -> None:
    await nc.jetstream().publish(f"{settings.subject_prefix}.1970010100.0", b"not json")
    ts = 7 * HOUR_MS
    assert partition_of("bob", settings.partitions) == 0
    await client.post(f"/analytics?timestamp={ts}&user=bob&click")
    await eventually(lambda: answers(client, [7]), lambda a: a[7] == (1, 1, 0))


@pytest.mark.usefixtures("projector")
async def test_replay_of_one_hour_repairs_it_and_leaves_the_rest_alone(
    settings: Settings, client: httpx.AsyncClient, nc: NATS, redis: Redis
) -> None:
    a, b = 11, 12
    for i in range(30):
        await client.post(f"/analytics?timestamp={a * HOUR_MS + i}&user=a{i % 7}&click")
        await client.post(f"/analytics?timestamp={b * HOUR_MS + i}&user=b{i}&impression")
    live = await eventually(
        lambda: answers(client, [a, b]), lambda got: got == {a: (7, 30, 0), b: (30, 0, 30)}
    )
    store = ProjectionStore.from_settings(redis, settings)
    gen = await store.current_generation(0)
    for p in range(settings.partitions):  # a bug, or a hand edit, corrupts hour a
        await redis.hset(CellLayout(store.keys).counts(Cell.of_hour(gen, p, a)), "clicks", 999)
        await redis.pfadd(CellLayout(store.keys).users(Cell.of_hour(gen, p, a)), "intruder")
    in_redis = Reader(redis, store.keys, settings.partitions)
    assert (await in_redis.hour(a)).clicks == 999 * settings.partitions

    report = await replay_hour(settings, nc, redis, a)
    assert report.events == 30
    assert await in_redis.hour(a) == HourTotals(*live[a])
    assert await eventually(lambda: answers(client, [a, b]), lambda got: got == live) == live
    # Projectors take their partitions back and keep counting.
    await client.post(f"/analytics?timestamp={a * HOUR_MS}&user=late&click")
    await eventually(lambda: answers(client, [a]), lambda got: got[a] == (8, 31, 0))
    leftovers = [k async for k in redis.scan_iter(match=f"{settings.key_prefix}:*:g{gen}-rebuild-*")]
    assert leftovers == []


@pytest.mark.usefixtures("projector")
async def test_reads_never_stop_during_a_single_hour_replay(
    settings: Settings, client: httpx.AsyncClient, nc: NATS, redis: Redis
) -> None:
    """Every GET during the swap answers 200 with the hour's own counts: the old generation's or the
    rebuilt one's, which are equal; never an empty, partial or doubled view of the hour."""
    truth = await post_workload(client, 200, seed=9)
    hour, other = truth.hours()[-1], truth.hours()[0]
    before = await settled(settings, lambda r: stored(r, settings, truth.hours()), counts_match(truth))  # type: ignore[arg-type]
    done = asyncio.Event()
    seen: list[tuple[int, int, tuple[int, int, int] | None]] = []  # (hour, status, counts)

    async def read() -> None:
        while not done.is_set():
            for h in (hour, other):
                response = await client.get(f"/analytics?timestamp={h * HOUR_MS}&_={len(seen)}")
                ok = response.status_code == 200
                seen.append((h, response.status_code, parse_text(response.text) if ok else None))
            await asyncio.sleep(0)

    async def rebuild() -> None:
        try:
            await replay_hour(settings, nc, redis, hour)
        finally:
            done.set()

    await asyncio.gather(read(), rebuild())
    assert len(seen) >= 2
    assert {status for _, status, _ in seen} == {200}
    wrong = [(h, counts) for h, _, counts in seen if counts != before[h]]
    assert wrong == [], wrong[:5]
    assert (await stored(redis, settings, [hour]))[hour] == before[hour]
