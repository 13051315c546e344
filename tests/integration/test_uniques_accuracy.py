"""Unique users against exact counts: HyperLogLog in a real valkey stays within its documented standard
error (0.81%) at 10k, 100k and 1M users, alone and as a union of hours, and contract.hll reads the same."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from redis import Redis

from contract.hll import cardinality, count, registers
from tests.conftest import Server

STANDARD_ERROR = 0.0081
"""What README.md and docs/design.md promise."""
BOUND = 3 * STANDARD_ERROR
"""Three standard errors: a correct HyperLogLog is outside it about once in 370 sets. The user names are
fixed, so each size's error is the same on every run (observed errors are in docs/testing.md)."""
PFADD_CHUNK = 10_000


@pytest.fixture(scope="module")
def valkey(redis_server: Server) -> Iterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    client.close()


def users(start: int, stop: int) -> list[str]:
    return [f"accuracy-user-{i}" for i in range(start, stop)]


def pfadd_all(valkey: Redis, key: str, names: list[str]) -> None:
    pipe = valkey.pipeline(transaction=False)
    for at in range(0, len(names), PFADD_CHUNK):
        pipe.pfadd(key, *names[at : at + PFADD_CHUNK])
    pipe.execute()


@pytest.mark.parametrize("exact", [10_000, 100_000, 1_000_000])
def test_unique_users_stay_within_three_standard_errors_of_the_exact_count(valkey: Redis, exact: int) -> None:
    key = f"accuracy:{uuid.uuid4().hex}"
    try:
        pfadd_all(valkey, key, users(0, exact))
        counted = int(valkey.pfcount(key))
        error = abs(counted - exact) / exact
        print(f"{exact} users: PFCOUNT {counted}, error {error:.4%}")
        assert error <= BOUND, f"{exact} users counted as {counted}: {error:.3%} off, over {BOUND:.2%}"
        raw = valkey.get(key)
        assert isinstance(raw, bytes)
        assert count(registers(raw)) == counted, "contract.hll reads these registers differently from PFCOUNT"
    finally:
        valkey.delete(key)


def test_the_union_of_hours_counts_a_user_once_within_the_error(valkey: Redis) -> None:
    """A range's uniques: 24 hours of 50k users each, overlapping by half, against the exact union."""
    prefix = f"accuracy-union:{uuid.uuid4().hex}"
    keys = [f"{prefix}:{h}" for h in range(24)]
    try:
        for h, key in enumerate(keys):
            pfadd_all(valkey, key, users(h * 25_000, h * 25_000 + 50_000))
        exact = 23 * 25_000 + 50_000
        counted = int(valkey.pfcount(*keys))
        error = abs(counted - exact) / exact
        print(f"union of 24 hours, {exact} users: PFCOUNT {counted}, error {error:.4%}")
        assert error <= BOUND, f"the union of {exact} users counted as {counted}: {error:.3%} off"
        raws = [valkey.get(key) for key in keys]
        assert cardinality(raw for raw in raws if isinstance(raw, bytes)) == counted
    finally:
        valkey.delete(*keys)
