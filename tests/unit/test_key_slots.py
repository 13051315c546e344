"""Every script call of a partition names keys of that partition's Redis Cluster slot only, and never a
shared key: recorded from the real store, leases and reader against a stand-in client."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from redis.asyncio import Redis

from api.reader import Reader
from contract.buckets import DAY_MS, day_token
from contract.cells import HEADER_ARGS, Cell, CellLayout
from contract.hours import HOUR_MS, hour_token
from contract.keys import GEN_PLACEHOLDER, Keys
from contract.schema import HourState, Kind
from projector.fold.deltas import Deltas, HourDelta, Keyed
from projector.projections.leases import Leases
from projector.projections.scripts import source
from projector.projections.store import ProjectionStore, SwapOutcome, Thawed

PREFIX = "hg"
PARTITIONS = 4
HOUR = 493_900


def crc16(data: bytes) -> int:
    """CRC16-XMODEM, the hash Redis Cluster uses for slots."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def slot(key: str) -> int:
    """The key's slot: of its hash tag (the text inside the first non-empty {...}) if it has one."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return crc16(key.encode()) % 16384


def test_the_slot_function_agrees_with_the_redis_cluster_specification() -> None:
    assert crc16(b"123456789") == 0x31C3  # the check value the specification gives
    assert slot("{user1000}.following") == slot("{user1000}.followers")
    assert slot("foo{}{bar}") == crc16(b"foo{}{bar}") % 16384  # an empty tag is no tag


def test_every_key_of_a_partition_carries_its_tag_and_shared_keys_carry_none() -> None:
    keys = Keys(PREFIX)
    assert Keys.tag(3) == "{p3}"
    assert keys.generation(3) == "hg:{p3}:gen"
    assert keys.watermark(1, 3) == "hg:{p3}:g1:wm"
    assert CellLayout(keys).users(Cell.of_hour(1, 3, 493_900)) == f"hg:{{p3}}:g1:{hour_token(493_900)}:users"
    assert (
        CellLayout(keys).counts(Cell.of_hour(1, 3, 493_900)) == f"hg:{{p3}}:g1:{hour_token(493_900)}:counts"
    )
    for p in range(PARTITIONS):
        own = [
            keys.generation(p),
            keys.fence(p),
            keys.lease(p),
            keys.trouble(p),
            keys.watermark(7, p),
            keys.dedup(7, p),
            keys.dirty(7, p),
            keys.gap(7, p),
            keys.cold(7, p),
            CellLayout(keys).users(Cell.of_hour(7, p, HOUR)),
            CellLayout(keys).counts(Cell.of_hour(7, p, HOUR)),
        ]
        assert {slot(k) for k in own} == {slot(Keys.tag(p))}
    for key in shared(keys):
        assert "{p" not in key
    # The audit's records share one slot, so each is written in one MULTI on a cluster.
    assert len({slot(k) for k in audit_records(keys)}) == 1


def shared(keys: Keys) -> list[str]:
    return [keys.generation_counter, keys.members, keys.replay_lock, *audit_records(keys)]


def audit_records(keys: Keys) -> list[str]:
    return [
        keys.audit_through,
        keys.audit_hour(HOUR),
        keys.audit_day("d202611250000"),
        keys.audit_claim(HOUR),
        keys.audit_last,
        keys.audit_mismatches,
    ]


PRELUDES = [source(name) for name in ("cells", "users", "axes")]
"""What every cell script starts with (its own first line follows)."""


@dataclass
class Recorder:
    """Stands in for Redis: records every script call (its name and keys) and answers plausibly."""

    calls: list[tuple[str, list[str], list[Any]]] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)

    def register_script(self, source: str) -> Any:
        for prelude in PRELUDES:
            source = source.removeprefix(prelude)
        name = source.splitlines()[0]

        async def run(keys: list[str], args: list[Any], client: Any = None) -> Any:
            self.calls.append((name, list(keys), list(args)))
            if "Applies one partition" in name:
                return [0, args[HEADER_ARGS], args[0]]
            if "Rebuilds one day rollup" in name:
                return [1]
            if "Reads one hour" in name:
                return [0, 0, 0]
            if "Reads rows of a range" in name:
                return [0] * (3 * range_rows(args) + 1)
            return 1

        script = cast(Any, run)
        script.sha, script.script = name, source
        return script

    def pipeline(self, transaction: bool = True) -> Pipe:
        return Pipe(self)


@dataclass
class Pipe:
    owner: Recorder
    queued: list[Any] = field(default_factory=list)

    async def __aenter__(self) -> Pipe:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    def get(self, key: str) -> None:
        self.queued.append(self.owner.values.get(key))

    def execute_command(self, command: str, sha: str, numkeys: int, *rest: Any) -> None:
        # Only execute_command: a cluster pipeline refuses `pipe.evalsha(...)` outright.
        assert command == "EVALSHA", command
        keys, args = list(rest[:numkeys]), list(rest[numkeys:])
        self.owner.calls.append((sha, keys, args))
        if "Reads rows of a range" in sha:
            self.queued.append([0] * (3 * range_rows(args) + 1))
        else:
            self.queued.append([0, 0, 0])

    async def execute(self) -> list[Any]:
        return self.queued


def range_rows(args: list[Any]) -> int:
    words = [int(w) for w in str(args[5 + 8 * int(args[2])]).split()]
    if words[0] == -1:
        return words[2]
    count, i = 0, 0
    while i < len(words):
        count, i = count + 1, i + words[i] + 1
    return count


def keys_named(name: str, keys: list[str], args: list[Any]) -> list[str]:
    """The script's KEYS, plus the keys its ARGV names as templates (read scripts fill in the generation)."""
    templates = [a.replace(GEN_PLACEHOLDER, "1") for a in args if isinstance(a, str) and GEN_PLACEHOLDER in a]
    return keys + templates


def assert_one_partition(calls: list[tuple[str, list[str], list[Any]]], keys: Keys) -> None:
    assert calls
    forbidden = set(shared(keys))
    for name, named, args in calls:
        every = keys_named(name, named, args)
        tags = {tuple(re.findall(r"\{p\d+\}", k)) for k in every}
        assert len(tags) == 1, f"{name}: keys of {tags}: {every}"
        assert len(tags.pop()) == 1, f"{name}: a key without a partition tag among {every}"
        assert len({slot(k) for k in every}) == 1, f"{name}: more than one slot: {every}"
        assert not forbidden & set(named), f"{name}: a shared key among {named}"


async def test_every_store_and_lease_script_touches_one_partition_slot() -> None:
    recorder = Recorder()
    client = cast(Redis, recorder)
    keys = Keys(PREFIX)
    store = ProjectionStore(client, keys, partitions=PARTITIONS)
    leases = Leases(client, keys, "me", ttl_s=5)
    deltas = Deltas(
        hours={HOUR: HourDelta.of({"ann"}, 1, 0), HOUR + 1: HourDelta.of({"bob"}, 0, 1, quarter=2)},
        keyed=[Keyed("k", "ann", 5, HOUR, Kind.CLICK)],
        last_seq=9,
        last_ms=5,
    )
    state = HourState(b"", 1, 0)
    for p in range(PARTITIONS):
        recorder.values[keys.generation(p)] = b"1"
        recorder.values[keys.fence(p)] = b"e"
        await store.apply(1, p, 0, deltas, epoch="e", phases=(0, 240, 1110))
        await store.evict(1, p, "e", 9, [(HOUR, 3)])
        await store.thaw(1, p, "e", 9, [Thawed(HOUR, 3, state)])
        await store.restore(1, p, "e", 9, [(HOUR, state)], [("ann\nk", 5)], cold=[(HOUR + 1, 3)])
        await store.rebuild_day(1, p, day_token(HOUR * HOUR_MS // DAY_MS * DAY_MS + 1110 * 60_000), "e")
        await leases.acquire(p)
        await leases.seize(p)
    epochs = dict.fromkeys(range(PARTITIONS), "e")
    assert await store.swap_hour(1, 2, HOUR, epochs, dict.fromkeys(epochs, 9)) is SwapOutcome.SWAPPED
    swaps = [c for c in recorder.calls if "Swaps one hour" in c[0]]
    assert len(swaps) == PARTITIONS  # one call per partition
    assert_one_partition(recorder.calls, keys)


@pytest.mark.parametrize("hours", [[HOUR], [HOUR, HOUR + 1, HOUR + 2]])
async def test_every_split_read_script_touches_one_partition_slot(hours: list[int]) -> None:
    recorder = Recorder()
    keys = Keys(PREFIX)
    reader = Reader(cast(Redis, recorder), keys, PARTITIONS, split_by_partition=True)
    await reader.hour(HOUR)
    await reader.buckets([hours[:1], hours[1:]] if len(hours) > 1 else [hours])
    assert len(recorder.calls) == 2 * PARTITIONS
    assert_one_partition(recorder.calls, keys)
