"""contract.hll against a real server: the raw bytes of PFADDed keys count to exactly what PFCOUNT says."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from redis import Redis

from contract.hll import cardinality, count, registers
from tests.conftest import Server

# Runs of `user-{i}`: up to ~2000 users a key stays sparse (3000 bytes at most); past that it turns dense.
user_ranges = st.builds(
    lambda start, size: [f"user-{i}" for i in range(start, start + size)],
    st.integers(0, 10**6),
    st.integers(0, 300) | st.integers(300, 3_000) | st.integers(3_000, 20_000),
)
odd_names = st.lists(st.text(max_size=20), max_size=50)
user_sets = st.one_of(user_ranges, odd_names)

small = [f"user-{i}" for i in range(40)]
large = [f"user-{i}" for i in range(20_000)]
EXAMPLES = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def valkey(redis_server: Server) -> Iterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    client.close()


keys = (f"hll-matches:{uuid.uuid4().hex}:{n}" for n in itertools.count())


def pfadd(client: Redis, users: list[str]) -> str:
    key = next(keys)
    pipe = client.pipeline(transaction=False)
    pipe.pfadd(key)  # creates the key even for no users, as a fresh sketch
    for at in range(0, len(users), 5000):
        pipe.pfadd(key, *users[at : at + 5000])
    pipe.execute()
    return key


def raw(client: Redis, key: str) -> bytes:
    value = client.get(key)
    assert isinstance(value, bytes | None)
    return value or b""


def test_every_sketch_counts_what_pfcount_says_sparse_or_dense(valkey: Redis) -> None:
    encodings: set[int] = set()

    @EXAMPLES
    @given(users=user_sets)
    @example(users=small)
    @example(users=large)
    def check(users: list[str]) -> None:
        key = pfadd(valkey, users)
        try:
            sketch = raw(valkey, key)
            encodings.add(sketch[4])
            assert count(registers(sketch)) == valkey.pfcount(key)
        finally:
            valkey.delete(key)

    check()
    assert encodings == {0, 1}, "both the sparse and the dense encoding were read"


def test_a_union_counts_what_pfcount_of_several_keys_says(valkey: Redis) -> None:
    @EXAMPLES
    @given(groups=st.lists(user_sets, min_size=1, max_size=4), missing=st.booleans())
    @example(groups=[small, large, small[:3]], missing=True)
    def check(groups: list[list[str]], missing: bool) -> None:
        names = [pfadd(valkey, users) for users in groups]
        if missing:
            names.append(next(keys))  # never written: PFCOUNT and the reader both take it as empty
        try:
            assert cardinality(raw(valkey, name) for name in names) == valkey.pfcount(*names)
        finally:
            valkey.delete(*names)

    check()
