"""A model-based test of the apply: hypothesis drives the real Redis store and its Lua scripts through
applies, redeliveries, duplicate keys, generation switches, seized leases, wipes, evictions and thaws,
and after every step the store must equal a plain Python model of what it promises."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any, cast

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from redis.asyncio import Redis

from contract.cells import Cell, CellLayout
from contract.hours import hour_token
from contract.keys import Keys
from contract.schema import Event, HourState, Kind, batch_of
from projector.fold.deltas import Deltas
from projector.projections.hot_window import apply_thawing
from projector.projections.snapshots import Snapshots
from projector.projections.store import Outcome, ProjectionStore, Thawed
from tests.conftest import Server
from tests.reference_fold import Message, fold

HOUR = 3_600_000
WINDOW_MS = 50
PARTITIONS = 2
HOURS = 3
MINE = "my-epoch"


def _event(hour: int, user: str, click: bool, key: str | None) -> Event:
    return Event(hour * HOUR + 7, user, Kind.CLICK if click else Kind.IMPRESSION, key)


events = st.builds(
    _event,
    st.integers(0, HOURS - 1),
    st.sampled_from("abcdefgh"),
    st.booleans(),
    st.one_of(st.none(), st.sampled_from(["k1", "k2"])),
)
batches = st.lists(events, min_size=1, max_size=6)


@dataclass
class Hour:
    users: set[str] = field(default_factory=set)
    clicks: int = 0
    impressions: int = 0


@dataclass
class Partition:
    """What one partition of the live generation must hold."""

    watermark: int = 0
    hours: dict[int, Hour] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    """Dedup: `user\nkey` -> stream ms it last counted."""
    dirty: set[int] = field(default_factory=set)
    cold: dict[int, int] = field(default_factory=dict)
    log: list[Message] = field(default_factory=list)
    """Every message of the partition in the stream: what a replay or a rebuild folds."""
    last: tuple[int, Deltas] | None = None


class FakeSnapshotEntries:
    """The snapshot entries the evicted hours were cut into: what apply_thawing reads back."""

    def __init__(self) -> None:
        self.held: dict[tuple[int, str, int], HourState] = {}

    async def entry(self, partition: int, token: str, at: int) -> HourState:
        return self.held[(partition, token, at)]


def model_add(part: Partition, message: Message) -> None:
    """The promise, one event at a time: unkeyed events always count; a keyed one only if its user has
    not sent the key within the window of stream time."""
    for event in message.batch.events:
        hour = part.hours.setdefault(event.ts // HOUR, Hour())
        if event.key is not None:
            member = f"{event.user}\n{event.key}"
            seen = part.seen.get(member)
            if seen is not None and message.stream_ms - seen <= WINDOW_MS:
                continue
            part.seen[member] = message.stream_ms
        hour.users.add(event.user)
        if event.kind is Kind.CLICK:
            hour.clicks += 1
        else:
            hour.impressions += 1


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.redis = Redis.from_url(REDIS_URL[0])
        self.keys = Keys(f"model-{uuid.uuid4().hex[:10]}")
        self.store = ProjectionStore(
            self.redis, self.keys, dedup_window_s=WINDOW_MS / 1000, partitions=PARTITIONS
        )
        self.snapshots = FakeSnapshotEntries()
        self.parts = [Partition() for _ in range(PARTITIONS)]
        self.seq = 0
        self.clock = 0
        self.gen = self.start_generations()
        for p in range(PARTITIONS):
            self.run(self.redis.set(self.keys.fence(p), MINE))

    def start_generations(self) -> int:
        """Every partition's pointer recorded (a live projector does so for its own partitions)."""
        gens = {self.run(self.store.current_generation(p)) for p in range(PARTITIONS)}
        assert len(gens) == 1
        return int(gens.pop())

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        async def clean() -> None:
            async for key in self.redis.scan_iter(match=f"{self.keys.prefix}:*", count=1000):
                await self.redis.unlink(key)
            await self.redis.aclose()

        self.run(clean())
        self.loop.close()

    def next_message(self, p: int, batch: list[Event], step: int) -> Message:
        self.seq += 1
        self.clock += step
        message = Message(self.seq, batch_of(events=tuple(batch)), stream_ms=self.clock)
        self.parts[p].log.append(message)
        return message

    async def _apply(self, p: int, message: Message, epoch: str = MINE) -> Outcome:
        part = self.parts[p]
        deltas = fold([message])
        result = await apply_thawing(
            self.store, cast(Snapshots, self.snapshots), self.gen, p, part.watermark, deltas, epoch=epoch
        )
        if result.outcome is Outcome.APPLIED:
            part.last = (part.watermark, deltas)
        return result.outcome

    def applied(self, p: int, message: Message) -> None:
        part = self.parts[p]
        for hour in fold([message]).hours:
            part.cold.pop(hour, None)  # a late event thaws its cold hour first
            part.dirty.add(hour)
        model_add(part, message)
        part.watermark = message.seq

    @rule(p=st.integers(0, PARTITIONS - 1), batch=batches, step=st.sampled_from([0, 10, 30, 60]))
    def apply(self, p: int, batch: list[Event], step: int) -> None:
        message = self.next_message(p, batch, step)
        assert self.run(self._apply(p, message)) is Outcome.APPLIED
        self.applied(p, message)

    @precondition(lambda self: any(part.last for part in self.parts))
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        p = data.draw(st.sampled_from([i for i, part in enumerate(self.parts) if part.last]))
        expected, deltas = cast(tuple[int, Deltas], self.parts[p].last)
        result = self.run(self.store.apply(self.gen, p, expected, deltas, epoch=MINE))
        assert result.outcome is Outcome.WATERMARK_MOVED
        assert result.watermark == self.parts[p].watermark

    @rule(p=st.integers(0, PARTITIONS - 1), user=st.sampled_from("xy"), hour=st.integers(0, HOURS - 1))
    def retry_with_the_same_idempotency_key(self, p: int, user: str, hour: int) -> None:
        """The client's retry: the same key again, soon after, maybe in the same message too."""
        event = Event(hour * HOUR + 9, user, Kind.CLICK, "order-1")
        for batch in ([event, event], [event]):
            message = self.next_message(p, batch, 5)
            assert self.run(self._apply(p, message)) is Outcome.APPLIED
            self.applied(p, message)

    @rule(p=st.integers(0, PARTITIONS - 1), meanwhile=st.one_of(st.none(), batches))
    def replay_into_a_new_generation_and_switch(self, p: int, meanwhile: list[Event] | None) -> None:
        """Replay's path: fold the log into generation g+1 (build mode) while live applies go on, then
        fold each partition's tail past them and switch."""
        old = self.gen
        gen = self.run(self.store.new_generation())
        assert gen > old
        bulk = {i: self.build(gen, i, 0) for i in range(PARTITIONS)}
        if meanwhile is not None:
            self.apply(p, meanwhile, 10)
        self.run(self._compare(building=gen))  # the build never touches what reads see
        for i in range(PARTITIONS):
            self.build(gen, i, bulk[i])
        assert self.run(self.store.switch_generation(gen)) == dict.fromkeys(range(PARTITIONS), old)
        self.run(self.store.drop_generation(old))
        self.gen = gen
        for part in self.parts:
            part.cold.clear()
            part.dirty = set(part.hours)

    def build(self, gen: int, p: int, after: int) -> int:
        """Fold the partition's log past `after` into `gen`; returns its new watermark there."""
        tail = [m for m in self.parts[p].log if m.seq > after]
        if not tail:
            return after
        result = self.run(self.store.apply(gen, p, after, fold(tail), epoch=MINE, live=False))
        assert result.outcome is Outcome.APPLIED
        return tail[-1].seq

    @rule(p=st.integers(0, PARTITIONS - 1), batch=batches)
    def a_seized_lease_refuses_the_apply(self, p: int, batch: list[Event]) -> None:
        self.run(self.redis.set(self.keys.fence(p), "someone-else"))
        message = Message(self.seq + 1, batch_of(events=tuple(batch)), stream_ms=self.clock)
        assert self.run(self._apply(p, message)) is Outcome.FENCED
        self.check_store_equals_model()
        self.run(self.redis.set(self.keys.fence(p), MINE))

    @rule()
    def wipe_then_rebuild_from_the_log(self) -> None:
        async def wipe() -> None:
            async for key in self.redis.scan_iter(match=f"{self.keys.prefix}:*", count=1000):
                await self.redis.unlink(key)

        self.run(wipe())
        for p in range(PARTITIONS):
            assert self.run(self.store.live_generation(p)) is None, "a wipe is detected"
        stale = Message(self.seq + 1, batch_of(events=(Event(7, "z", Kind.CLICK),)), stream_ms=self.clock)
        assert self.run(self._apply(0, stale)) is Outcome.GENERATION_MOVED
        self.gen = self.start_generations()
        assert self.gen == 1
        for p, part in enumerate(self.parts):
            self.run(self.redis.set(self.keys.fence(p), MINE))
            if part.log:
                result = self.run(self.store.apply(self.gen, p, 0, fold(part.log), epoch=MINE))
                assert result.outcome is Outcome.APPLIED
            part.cold.clear()
            part.dirty = set(part.hours)

    @precondition(lambda self: any(set(part.hours) - set(part.cold) for part in self.parts))
    @rule(data=st.data())
    def snapshot_and_evict_an_hour(self, data: st.DataObject) -> None:
        hot = [(p, h) for p, part in enumerate(self.parts) for h in part.hours if h not in part.cold]
        p, hour = data.draw(st.sampled_from(sorted(hot)))
        part = self.parts[p]
        token = hour_token(hour)
        wm = part.watermark
        due = [(hour, wm)]
        if hour in part.dirty:  # changed since its last snapshot: it must stay
            assert self.run(self.store.evict(self.gen, p, MINE, wm, due)) == 0
        users = self.run(self.redis.get(CellLayout(self.keys).users(Cell.of_hour(self.gen, p, hour))))
        counts = self.run(self.redis.hgetall(CellLayout(self.keys).counts(Cell.of_hour(self.gen, p, hour))))
        state = HourState(users, int(counts.get(b"clicks", 0)), int(counts.get(b"impressions", 0)))
        self.snapshots.held[(p, token, wm)] = state
        self.run(self.redis.zrem(self.keys.dirty(self.gen, p), token))  # what the snapshot writer does
        part.dirty.discard(hour)
        assert self.run(self.store.evict(self.gen, p, MINE, wm, due)) == 1
        part.cold[hour] = wm

    @precondition(lambda self: any(part.cold for part in self.parts))
    @rule(data=st.data())
    def thaw_an_hour(self, data: st.DataObject) -> None:
        cold = [(p, h) for p, part in enumerate(self.parts) for h in part.cold]
        p, hour = data.draw(st.sampled_from(sorted(cold)))
        part = self.parts[p]
        at = part.cold[hour]
        thawed = Thawed(hour, at, self.snapshots.held[(p, hour_token(hour), at)])
        assert self.run(self.store.thaw(self.gen, p, MINE, part.watermark, [thawed]))
        del part.cold[hour]

    @invariant()
    def check_store_equals_model(self) -> None:
        self.run(self._compare())

    async def _compare(self, building: int | None = None) -> None:
        r, k, gen = self.redis, self.keys, self.gen
        for p in range(PARTITIONS):
            assert await self.store.live_generation(p) == gen
            head = k.gen_prefix(p)
            async for raw in r.scan_iter(match=f"{head}*", count=1000):
                token = raw.decode()[len(head) :].partition(":")[0]
                assert not token.isdigit() or int(token) in (gen, building), (
                    f"{raw!r} outlived its generation"
                )
        scratch = f"scratch-{k.prefix}"
        for p, part in enumerate(self.parts):
            assert await self.store.watermark(gen, p) == part.watermark, f"p{p} watermark"
            assert await self.store.cold_hours(gen, p) == part.cold, f"p{p} cold hours"
            for hour, want in part.hours.items():
                users, counts = (
                    CellLayout(k).users(Cell.of_hour(gen, p, hour)),
                    CellLayout(k).counts(Cell.of_hour(gen, p, hour)),
                )
                if hour in part.cold:
                    assert await r.exists(users, counts) == 0, f"p{p} {hour}: cold yet in Redis"
                    held = self.snapshots.held[(p, hour_token(hour), part.cold[hour])]
                    assert (held.clicks, held.impressions) == (want.clicks, want.impressions)
                    continue
                got = await r.hgetall(counts)
                assert int(got.get(b"clicks", 0)) == want.clicks, f"p{p} h{hour} clicks"
                assert int(got.get(b"impressions", 0)) == want.impressions, f"p{p} h{hour} impressions"
                await r.delete(scratch)
                if want.users:
                    await r.pfadd(scratch, *want.users)
                assert await r.pfcount(users) == await r.pfcount(scratch), f"p{p} h{hour} uniques"
        await r.delete(scratch)


REDIS_URL: list[str] = []


def test_the_store_equals_a_plain_model_after_every_step(redis_server: Server) -> None:
    REDIS_URL[:] = [redis_server.url]
    run_state_machine_as_test(
        StoreMachine,
        settings=settings(
            max_examples=30,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
