"""The suite's polling helper: a dependency still coming round is "not yet"; a failed check is not."""

from __future__ import annotations

import itertools

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.helpers import eventually


async def test_eventually_keeps_polling_through_a_dependency_that_is_not_up_yet() -> None:
    calls = itertools.count(1)

    async def probe() -> int:
        n = next(calls)
        if n < 3:
            raise RedisConnectionError("connection refused")
        return n

    assert await eventually(probe, lambda n: n >= 3, timeout=5, interval=0.001) == 3


async def test_eventually_fails_at_once_on_an_assertion_inside_its_probe() -> None:
    calls = itertools.count(1)

    async def probe() -> int:
        n = next(calls)
        assert n > 1, "a 500 was served"  # what a probe checks on the way is a finding, not a wait
        return n

    with pytest.raises(AssertionError, match="a 500 was served"):
        await eventually(probe, lambda n: n >= 3, timeout=5, interval=0.001)
    assert next(calls) == 2  # it never polled again


async def test_eventually_names_the_last_value_when_the_condition_never_holds() -> None:
    async def probe() -> int:
        return 7

    with pytest.raises(AssertionError, match="last value: 7"):
        await eventually(probe, lambda n: n > 7, timeout=0.05, interval=0.01)
