"""The write path of the stored buckets: the live projector and a replay both write exactly the reference
fold's hours, quarter-hours and day rollups (one per phase of the generation), and each hour's axis cell
of events without dimensions, counts equal and every HyperLogLog register equal to PFADD of the same
users, with duplicates (keyed events) and late events."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from contract import cells as layout
from contract import schema
from contract.buckets import (
    day_tokens,
    parse_phases,
    parse_quarter_token,
    phases_text,
    quarter_token,
    split_hours,
)
from contract.hll import registers, sketch
from contract.hours import HOUR_MS, hour_of, hour_token, partition_of, subject
from contract.keys import Keys
from contract.schema import Event, Kind, batch_of
from deploy.settings import Settings
from projector.fold.deltas import Deltas, Keyed
from projector.live.balancer import Projector
from projector.projections.store import Outcome, ProjectionStore
from projector.replay.driver import replay
from tests.helpers import settle
from tests.integration.conftest import make_stream
from tests.reference_fold import Cell, Message, cells

NY_FALL_BACK = 1_793_512_800_000  # 2026-11-01T06:00Z: New York's clocks go back, a 25-hour day
USERS = [f"user-{i}" for i in range(300)]


def workload(partitions: int, seed: int) -> list[tuple[str, list[Event]]]:
    """Messages (subject, events) as ingest writes them: mostly two days around New York's fall-back
    day in rising time, 5% of events hours or days late, 10% keyed with many retries of the same key,
    some events right on quarter-hour and local-midnight boundaries."""
    rng = random.Random(seed)
    around = NY_FALL_BACK - 30 * HOUR_MS
    edges = [NY_FALL_BACK, NY_FALL_BACK - 1, around + 18 * HOUR_MS + 30 * 60_000]  # Kolkata's midnight
    stamps = sorted(around + rng.randrange(60 * HOUR_MS) for _ in range(2400)) + edges
    events: list[Event] = []
    keyed: list[Event] = []
    for ts in stamps:
        if keyed and rng.random() < 0.05:
            events.append(rng.choice(keyed))  # a retried POST: the same event and key, later
            continue
        if rng.random() < 0.05:
            ts -= rng.choice([HOUR_MS, 5 * HOUR_MS, 3 * 86_400_000]) + rng.randrange(HOUR_MS)
        elif rng.random() < 0.1:
            ts = ts // 900_000 * 900_000 + rng.choice([0, 899_999])
        user = rng.choice(USERS)
        key = f"k{rng.randrange(40)}" if rng.random() < 0.1 else None
        events.append(Event(ts, user, rng.choice(list(Kind)), key))
        if key is not None:
            keyed.append(events[-1])
    messages: list[tuple[str, list[Event]]] = []
    open_: dict[str, list[Event]] = {}
    for event in events:
        subj = subject("x", hour_of(event.ts), partition_of(event.user, partitions))
        batch = open_.setdefault(subj, [])
        batch.append(event)
        if len(batch) >= rng.randint(1, 8):
            messages.append((subj, open_.pop(subj)))
    messages += list(open_.items())
    return messages


async def publish(settings: Settings, nc: NATS, messages: list[tuple[str, list[Event]]]) -> None:
    js = nc.jetstream()
    for subj, events in messages:
        real = subj.replace("x.", f"{settings.subject_prefix}.", 1)
        await js.publish(real, schema.encode(batch_of(events=tuple(events))), stream=settings.stream_name)


def expected(settings: Settings, messages: list[tuple[str, list[Event]]]) -> dict[int, dict[str, Cell]]:
    """The reference fold's cells per partition. Every message is stored within the dedup window of
    the others (the test takes seconds), so stream time 0 for all decides keyed events alike."""
    per: dict[int, list[Message]] = defaultdict(list)
    for seq, (subj, events) in enumerate(messages, start=1):
        per[int(subj.rsplit(".", 1)[1])].append(Message(seq, batch_of(events=tuple(events)), 0))
    window = int(settings.dedup_window_s * 1000)
    return {p: cells(msgs, settings.day_phases, window) for p, msgs in per.items()}


async def stored(redis: Redis, keys: Keys, gen: int, partition: int) -> dict[str, tuple[bytes, int, int]]:
    """Every cell of the generation's partition in Redis: (registers, clicks, impressions) per token."""
    head = f"{keys.prefix}:{keys.tag(partition)}:g{gen}:"
    found: dict[str, tuple[bytes, int, int]] = {}
    async for raw in redis.scan_iter(match=f"{head}*:counts", count=1000):
        token = raw.decode()[len(head) : -len(":counts")]
        counts = await redis.hgetall(raw)
        hll = await redis.get(layout.CellLayout(keys).users(layout.Cell(gen, partition, token)))
        assert isinstance(hll, bytes), f"{token}: counts without users"
        found[token] = (registers(hll), int(counts.get(b"clicks", 0)), int(counts.get(b"impressions", 0)))
    async for raw in redis.scan_iter(match=f"{head}*:{layout.AXES}", count=1000):
        assert isinstance(raw, bytes)
        hour = raw.decode()[len(head) : -len(layout.AXES) - 1]
        for field, value in (await redis.hgetall(raw)).items():
            axis = field.decode() if isinstance(field, bytes) else field
            if axis[0] in "#!" or layout.axis_counts(value) == (0, 0):
                continue  # no axis, or one named by keyed events that all were retries
            hll = await redis.get(f"{head}{hour}:{axis}:users")
            assert isinstance(hll, bytes), f"{hour}:{axis}: counts without users"
            found[f"{hour}:{axis}"] = (registers(hll), *layout.axis_counts(value))
    return found


def as_stored(reference: dict[str, Cell], split: frozenset[int]) -> dict[str, tuple[bytes, int, int]]:
    """The reference's cells as Redis holds them; no event here carries a dimension, so each hour also
    has its axis cell of events without any (`<hour>:(none)`), equal to the hour, and so has each
    quarter-hour of a split hour (`split`, a zone's day starts inside it)."""
    axes = {
        f"{t}:{layout.NONE}": cell
        for t, cell in reference.items()
        if len(t) == 10 or (len(t) == 12 and parse_quarter_token(t)[0] % 24 in split)
    }
    return {
        token: (sketch(users), clicks, impr) for token, (users, clicks, impr) in {**reference, **axes}.items()
    }


@pytest.fixture
async def own_nc(settings: Settings) -> AsyncIterator[NATS]:
    client = await nats.connect(settings.nats_url)
    yield client
    await client.close()


@pytest.mark.parametrize(
    ("zones", "processes"), [("UTC", 0), ("Asia/Kolkata,America/New_York", 2)], ids=["utc", "kolkata-ny"]
)
async def test_live_and_replay_write_exactly_the_reference_cells(
    settings: Settings, nc: NATS, own_nc: NATS, redis: Redis, zones: str, processes: int
) -> None:
    settings = settings.replace(day_zones=zones, projector_batch=7, replay_processes=processes)
    keys = Keys(settings.key_prefix)
    await make_stream(settings)
    messages = workload(settings.partitions, seed=len(zones))
    await publish(settings, nc, messages)
    want = expected(settings, messages)
    split = split_hours(settings.day_phases)
    sent = sum(map(len, (events for _, events in messages)))
    counted = sum(c + i for w in want.values() for t, (_, c, i) in w.items() if len(t) == 10)
    assert 50 < sent - counted < 200  # retries of keyed events were refused
    assert any(t.startswith("d") and t[-4:] == "0400" for w in want.values() for t in w) == (zones != "UTC")

    stop = asyncio.Event()
    task = asyncio.create_task(Projector(settings, own_nc, redis).run(stop))
    try:
        await settle(nc, redis, settings)
    finally:
        stop.set()
        await task
    for p in range(settings.partitions):
        assert parse_phases(await redis.get(keys.phases(1, p))) == settings.day_phases
        assert await stored(redis, keys, 1, p) == as_stored(want.get(p, {}), split), f"live, partition {p}"

    await replay(settings, nc, redis)
    for p in range(settings.partitions):
        gen = int(await redis.get(keys.generation(p)) or 0)
        assert gen > 1
        assert parse_phases(await redis.get(keys.phases(gen, p))) == settings.day_phases
        assert await stored(redis, keys, gen, p) == as_stored(want.get(p, {}), split), (
            f"replay, partition {p}"
        )


async def test_a_generation_keeps_the_phases_recorded_first(
    settings: Settings, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    store = ProjectionStore.from_settings(redis, settings)
    assert await store.phases(5, 0) == ()  # none recorded: a generation from before day rollups
    assert await store.record_phases(6, 0, (0, 1110)) == (0, 1110)
    with caplog.at_level(logging.WARNING, logger="projector"):
        assert await store.record_phases(6, 0, (0, 240, 300)) == (0, 1110)  # the stored ones rule
    assert "ANALYTICS_DAY_ZONES" in caplog.text
    assert "./just replay" in caplog.text
    fresh = ProjectionStore.from_settings(redis, settings)
    assert await fresh.phases(6, 0) == (0, 1110)
    assert await fresh.record_phases(6, 0, (0, 240, 300), live=False) == (0, 240, 300)  # a build sets
    assert await redis.get(store.keys.phases(6, 0)) == phases_text((0, 240, 300)).encode()


async def test_many_users_go_into_dense_cells_as_pfadd_would_put_them(
    settings: Settings, redis: Redis
) -> None:
    """apply.lua sends a group of many users into its dense cells through one scratch HyperLogLog and
    PFMERGE, and so into sparse or new cells these users push past the sparse limit; into other sparse
    cells by PFADD: every cell ends with the registers, encoding and length that PFADD of each group's
    users into each of its cells gives, and no scratch key is left."""
    store = ProjectionStore.from_settings(redis, settings)
    phases = (0, 330)  # UTC and Kolkata
    gen = await store.new_generation()
    await store.record_phases(gen, 0, phases, live=False)
    hour = hour_of(NY_FALL_BACK)
    rng = random.Random(3)
    # (quarter, unkeyed users, keyed users) per apply: cells go dense, then take merges; a new quarter
    # of dense hour and days; a small group; many keyed users; an hour of its own that stays sparse;
    # then two new quarters stay sparse, and one of them takes enough new users to go dense.
    applies = [
        [(hour, 0, range(0, 3000), range(0))],
        [(hour, 0, range(2500, 4000), range(0))],
        [(hour, 1, range(4000, 4700), range(4700, 4800)), (hour - 30, 2, range(50), range(0))],
        [(hour, 1, range(5000, 5030), range(5030, 5600)), (hour - 30, 2, range(50, 100), range(0))],
        [(hour, 2, range(6000, 6800), range(0)), (hour, 3, range(7000, 7800), range(0))],
        [(hour, 3, range(8000, 9000), range(0))],
    ]
    watermark = 0
    reference = f"{settings.key_prefix}:reference:"
    for seq, groups in enumerate(applies, start=1):
        deltas = Deltas(last_seq=seq, last_ms=NY_FALL_BACK)
        for h, quarter, plain, keyed in groups:
            cell = deltas.hour(h).quarters[quarter]
            cell.users.update(f"u{i}" for i in plain)
            cell.impressions += len(plain)
            deltas.keyed += [Keyed(f"k{i}", f"u{i}", NY_FALL_BACK, h, Kind.CLICK, quarter) for i in keyed]
            users = [f"u{i}" for i in (*plain, *keyed)]
            rng.shuffle(users)
            for token in (quarter_token(h, quarter), hour_token(h), *day_tokens(h, quarter, phases)):
                await redis.pfadd(reference + token, *users)
        result = await store.apply(gen, 0, watermark, deltas, live=False)
        assert result.outcome is Outcome.APPLIED
        watermark = result.watermark
    tokens = [raw.decode()[len(reference) :] async for raw in redis.scan_iter(match=f"{reference}*")]
    assert len(tokens) == 4 + 1 + 4 + 2  # four quarters, an hour, two days each of the two hours
    layout_ = layout.CellLayout(store.keys)
    for token in tokens:
        mine = await redis.get(layout_.users(layout.Cell(gen, 0, token)))
        theirs = await redis.get(reference + token)
        assert isinstance(mine, bytes)
        assert isinstance(theirs, bytes)
        # Bytes 8-15 cache a cardinality: PFMERGE marks it stale even when no register changed.
        assert (mine[:5], len(mine), registers(mine)) == (theirs[:5], len(theirs), registers(theirs)), token
    encodings = {await redis.getrange(layout_.users(layout.Cell(gen, 0, t)), 4, 4) for t in tokens}
    assert encodings == {b"\x00", b"\x01"}  # dense cells and sparse ones
    assert not await redis.exists(store.keys.scratch(0))
