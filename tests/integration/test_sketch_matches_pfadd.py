"""contract.hll.sketch against a real server: the registers it builds from users are, register for
register, those of the key PFADD builds from the same users (the audit relies on it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from redis import Redis

from contract.hll import registers, sketch
from tests.conftest import Server


@pytest.fixture(scope="module")
def valkey(redis_server: Server) -> Iterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    client.close()


def test_sketch_equals_the_registers_pfadd_builds(valkey: Redis) -> None:
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        users=st.lists(st.text(max_size=30), max_size=60)
        | st.integers(0, 5000).map(lambda n: [f"user-{i}" for i in range(n)])
    )
    @example(users=[])
    @example(users=["", "a", "ab", "abcdefgh", "abcdefghi", "ünïcødé"])
    def check(users: list[str]) -> None:
        key = f"sketch:{uuid.uuid4().hex}"
        try:
            valkey.pfadd(key)
            for at in range(0, len(users), 2000):
                valkey.pfadd(key, *users[at : at + 2000])
            raw = valkey.get(key)
            assert isinstance(raw, bytes)
            assert registers(raw) == sketch(users)
        finally:
            valkey.delete(key)

    check()
