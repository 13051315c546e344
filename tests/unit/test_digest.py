"""The batch digest gives exactly what reading each message and folding them one by one gives."""

from __future__ import annotations

import zlib

import msgspec
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.msg import Msg

from contract import schema
from contract.hours import HOUR_MS, subject
from contract.schema import Event, Kind, batch_of
from deploy.settings import Settings
from projector.fold.deltas import Deltas
from projector.fold.digest import digest
from projector.fold.rules import Rejected
from projector.log.fetched import Meta
from tests.reference_fold import fold, read

PARTS = 2
HOUR = 490_000
SETTINGS = Settings(partitions=PARTS)
PREFIX = SETTINGS.subject_prefix

users = st.sampled_from(
    ["a", "b", "c", "dd", "e", "f", "", " ", "x\ny", "bad\x01", "soft\xadhyphen", "z" * 257]
)
stamps = st.sampled_from(
    [
        HOUR * HOUR_MS,
        HOUR * HOUR_MS + 5,
        HOUR * HOUR_MS + 1_800_000,  # the third quarter-hour
        (HOUR + 1) * HOUR_MS - 1,
        (HOUR + 1) * HOUR_MS,
        HOUR * HOUR_MS - 1,
    ]
)
keys = st.none() | st.sampled_from(["k", "k2", "", "é"])
dims = st.sampled_from(
    [(), (("campaign", "spring"),), (("campaign", "a"), ("site", "x.com")), (("site", "b"),)]
)
events = st.builds(Event, ts=stamps, user=users, kind=st.sampled_from(Kind), key=keys, dims=dims)
subjects = st.sampled_from(
    [
        subject(PREFIX, HOUR, 0),
        subject(PREFIX, HOUR, 1),
        subject(PREFIX, HOUR + 1, 0),
        "elsewhere.x",
        f"{PREFIX}.2020.0",
    ]
)
payloads = st.lists(events, max_size=5).map(
    lambda evs: schema.encode(batch_of(events=tuple(evs)))
) | st.sampled_from([b"not json", b'{"v":99,"events":[]}', b'{"v":1,"events":[]}', b"[]"])
runs = st.lists(st.tuples(subjects, payloads, st.integers(min_value=0, max_value=3)), max_size=14)


def one_by_one(
    run: list[tuple[str, bytes, int]], after: int
) -> tuple[Deltas, list[tuple[int, list[Rejected]]], int, bool]:
    """The reference: `read` each message until one of an unknown version, then `fold` them."""
    reads = []
    unknown = False
    for i, (subj, payload, stamp) in enumerate(run):
        try:
            msg = Msg(None, subject=subj, data=payload)  # type: ignore[arg-type]
            reads.append(read(msg, SETTINGS, meta=Meta(i + 1, i + 1, 1, stamp, 0)))
        except schema.UnknownVersion:
            unknown = True
            break
    deltas = fold((item.message for item in reads), after=after)
    rejected = [(i, list(item.rejected)) for i, item in enumerate(reads) if item.rejected]
    return deltas, rejected, len(reads), unknown


def plain(d: Deltas) -> object:
    hours = {
        h: tuple((frozenset(q.users), q.clicks, q.impressions) for q in v.quarters)
        for h, v in d.hours.items()
    }
    return hours, d.keyed, d.last_seq, d.last_ms, d.events


@given(runs, st.integers(min_value=0, max_value=6))
def test_the_digest_of_a_run_equals_reading_and_folding_each_message(
    run: list[tuple[str, bytes, int]], after: int
) -> None:
    expected, expected_rejected, count, unknown = one_by_one(run, after)
    got = digest(
        [s for s, _, _ in run],
        [p for _, p, _ in run],
        list(range(1, len(run) + 1)),
        [t for _, _, t in run],
        prefix=PREFIX,
        partitions=PARTS,
        after=after,
    )
    assert plain(got.deltas) == plain(expected)
    assert got.rejected == expected_rejected
    assert got.digested == count
    assert (got.unknown is not None) == unknown


def test_a_clean_run_of_many_messages_is_folded_per_hour_with_keys_in_stream_order() -> None:
    user = next(f"u{i}" for i in range(50) if zlib.crc32(f"u{i}".encode()) % PARTS == 0)
    now, late = subject(PREFIX, HOUR, 0), subject(PREFIX, HOUR - 3, 0)
    run = [
        (now, batch_of(events=(Event(HOUR * HOUR_MS, user, Kind.CLICK),))),
        (late, batch_of(events=(Event((HOUR - 3) * HOUR_MS, user, Kind.IMPRESSION, "k1"),))),
        (now, batch_of(events=(Event(HOUR * HOUR_MS + 1, user, Kind.IMPRESSION, "k0"),) * 2)),
    ]
    got = digest(
        [s for s, _ in run],
        [msgspec.json.encode(b) for _, b in run],
        [5, 6, 7],
        [50, 60, 70],
        prefix=PREFIX,
        partitions=PARTS,
    )
    assert got.rejected == []
    assert got.digested == 3
    assert got.unknown is None
    assert {h: (d.users, d.clicks, d.impressions) for h, d in got.deltas.hours.items()} == {
        HOUR: ({user}, 1, 0),
        HOUR - 3: (set(), 0, 0),
    }
    assert [(k.key, k.stream_ms, k.hour, k.quarter) for k in got.deltas.keyed] == [
        ("k1", 60, HOUR - 3, 0),
        ("k0", 70, HOUR, 0),
        ("k0", 70, HOUR, 0),
    ]
    assert (got.deltas.last_seq, got.deltas.last_ms, got.deltas.events) == (7, 70, 4)


def test_a_run_across_quarter_hours_is_counted_in_each_quarter() -> None:
    users = [f"u{i}" for i in range(60) if zlib.crc32(f"u{i}".encode()) % PARTS == 0][:3]
    start = HOUR * HOUR_MS
    events = (
        Event(start + 899_999, users[0], Kind.CLICK),
        Event(start + 900_000, users[1], Kind.IMPRESSION),
        Event(start + 3_599_999, users[2], Kind.CLICK),
        Event(start + 3_000_000, users[0], Kind.IMPRESSION, "k"),
    )
    got = digest(
        [subject(PREFIX, HOUR, 0)],
        [msgspec.json.encode(batch_of(events=events))],
        [1],
        [10],
        prefix=PREFIX,
        partitions=PARTS,
    )
    quarters = [(q.users, q.clicks, q.impressions) for q in got.deltas.hours[HOUR].quarters]
    assert quarters == [({users[0]}, 1, 0), ({users[1]}, 0, 1), (set(), 0, 0), ({users[2]}, 1, 0)]
    assert got.deltas.hours[HOUR].users == set(users)
    assert [(k.hour, k.quarter) for k in got.deltas.keyed] == [(HOUR, 3)]


def _without_dimensions(payload: bytes) -> bytes:
    try:
        batch = schema.decode(payload)
    except ValueError:
        return payload
    return schema.encode(batch_of(events=tuple(msgspec.structs.replace(e, dims=()) for e in batch.events)))


@given(runs, st.integers(min_value=0, max_value=6))
def test_events_count_in_every_total_alike_with_or_without_their_dimensions(
    run: list[tuple[str, bytes, int]], after: int
) -> None:
    """Dimensions are recorded in the log for breakdowns; the totals never depend on them."""
    found = []
    for strip in (False, True):
        payloads = [_without_dimensions(p) if strip else p for _, p, _ in run]
        got = digest(
            [s for s, _, _ in run],
            payloads,
            list(range(1, len(run) + 1)),
            [t for _, _, t in run],
            prefix=PREFIX,
            partitions=PARTS,
            after=after,
        )
        found.append(plain(got.deltas))
    assert found[0] == found[1]
