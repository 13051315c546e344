"""The projector's screen: the same rules as ingest, event by event, with a fast path that must agree."""

from __future__ import annotations

import zlib

from hypothesis import given
from hypothesis import strategies as st

from contract.hours import HOUR_MS
from contract.schema import Event, Kind, batch_of
from projector.fold.rules import Rejected, event_problem, screen

HOUR = 7
PARTS = 3

users = st.sampled_from(
    ["a", "b", "c", "dd", "e", "f", "", " ", "  ", "x\ny", "bad\x01", "soft\xadhyphen", "é" * 70, "z" * 257]
)
stamps = st.sampled_from([HOUR * HOUR_MS, HOUR * HOUR_MS + 5, (HOUR + 1) * HOUR_MS - 1]) | st.integers(
    min_value=-5, max_value=10 * HOUR_MS
)
keys = st.none() | st.sampled_from(["k", "", "é", "x" * 129, "ok key"])
good_dims = [(), (("campaign", "spring"),), (("campaign", "a"), ("site", "x.com"))]
bad_dims = [(("site", "a"), ("campaign", "b")), (("campaign", ""),), (("Campaign", "x"),), (("c", "a b"),)]
dims = st.sampled_from([*good_dims, *bad_dims])
events = st.builds(Event, ts=stamps, user=users, kind=st.sampled_from(Kind), key=keys, dims=dims)


def partition(user: str) -> int:
    return zlib.crc32(user.encode()) % PARTS


@given(st.lists(events, max_size=8), st.integers(min_value=0, max_value=PARTS - 1))
def test_the_screen_keeps_exactly_the_events_that_pass_every_rule(evs: list[Event], part: int) -> None:
    kept, rejected = screen(batch_of(events=tuple(evs)), HOUR, part, PARTS)
    expected_kept = [e for e in evs if event_problem(e, HOUR, part, PARTS) is None]
    assert list(kept.events) == expected_kept
    assert [r.position for r in rejected] == [
        i for i, e in enumerate(evs) if event_problem(e, HOUR, part, PARTS) is not None
    ]


def test_events_that_ingest_would_have_refused_are_rejected_with_a_reason() -> None:
    good_user = next(f"user{i}" for i in range(100) if partition(f"user{i}") == 0)
    start = HOUR * HOUR_MS
    evs = (
        Event(start, good_user, Kind.CLICK),
        Event(start + HOUR_MS, good_user, Kind.CLICK),
        Event(start, "u" * 300, Kind.CLICK),
        Event(start, good_user + "\n", Kind.CLICK),
        Event(start, good_user, Kind.CLICK, key="é"),
    )
    kept, rejected = screen(batch_of(events=evs), HOUR, 0, PARTS)
    assert kept.events == evs[:1]
    assert [r.position for r in rejected] == [1, 2, 3, 4]
    assert "not in the hour of its subject" in rejected[0].reason
    assert "longer than 256 bytes" in rejected[1].reason


def test_an_event_on_another_partitions_subject_is_rejected() -> None:
    user = next(f"user{i}" for i in range(100) if partition(f"user{i}") == 1)
    _, rejected = screen(batch_of(events=(Event(HOUR * HOUR_MS, user, Kind.CLICK),)), HOUR, 0, PARTS)
    assert rejected == [Rejected(0, "user belongs to partition 1, not 0")]


def test_an_empty_idempotency_key_is_rejected_even_in_a_clean_batch() -> None:
    user = next(f"user{i}" for i in range(100) if partition(f"user{i}") == 0)
    _, rejected = screen(batch_of(events=(Event(HOUR * HOUR_MS, user, Kind.CLICK, key=""),)), HOUR, 0, PARTS)
    assert [r.position for r in rejected] == [0]


def test_a_clean_batch_passes_untouched() -> None:
    user = next(f"user{i}" for i in range(100) if partition(f"user{i}") == 2)
    batch = batch_of(events=(Event(HOUR * HOUR_MS, user, Kind.IMPRESSION, key="k-1"),))
    assert screen(batch, HOUR, 2, PARTS) == (batch, [])


def test_a_user_of_only_whitespace_is_rejected_even_in_a_clean_batch() -> None:
    ev = Event(HOUR * HOUR_MS, " ", Kind.CLICK)
    kept, rejected = screen(batch_of(events=(ev,)), HOUR, partition(" "), PARTS)
    assert kept.events == ()
    assert "only whitespace" in rejected[0].reason
