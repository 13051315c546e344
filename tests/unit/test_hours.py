from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from contract.hours import (
    MAX_TIMESTAMP_MS,
    hour_end,
    hour_of,
    hour_start,
    hour_token,
    parse_hour_token,
    parse_subject,
    partition_of,
    subject,
)

timestamps = st.integers(min_value=0, max_value=MAX_TIMESTAMP_MS)


def test_seed_example_lands_in_the_first_hour_of_1970() -> None:
    assert hour_token(hour_of(123)) == "1970010100"


def test_hour_boundaries_are_utc() -> None:
    ts = int(datetime(2026, 11, 25, 14, 59, 59, 999_000, tzinfo=UTC).timestamp() * 1000)
    assert hour_token(hour_of(ts)) == "2026112514"
    assert hour_token(hour_of(ts + 1)) == "2026112515"


@given(timestamps)
def test_every_timestamp_lies_inside_its_hour(ts: int) -> None:
    hour = hour_of(ts)
    assert hour_start(hour).timestamp() * 1000 <= ts < hour_end(hour).timestamp() * 1000


@given(timestamps)
def test_hour_token_round_trips(ts: int) -> None:
    hour = hour_of(ts)
    assert parse_hour_token(hour_token(hour)) == hour


@given(st.text(min_size=1), st.integers(min_value=1, max_value=64))
def test_a_user_always_lands_in_the_same_partition(user: str, partitions: int) -> None:
    p = partition_of(user, partitions)
    assert 0 <= p < partitions
    assert partition_of(user, partitions) == p


def test_partitioning_is_stable_across_processes() -> None:
    # crc32, not hash(): these values must never change, or a replay would re-partition users.
    assert [partition_of(u, 4) for u in ("kek", "alice", "bob")] == [1, 3, 0]


@given(timestamps, st.integers(min_value=0, max_value=63))
def test_subject_round_trips(ts: int, partition: int) -> None:
    subj = subject("analytics.events", hour_of(ts), partition)
    assert parse_subject("analytics.events", subj) == (hour_of(ts), partition)
