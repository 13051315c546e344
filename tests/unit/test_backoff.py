from __future__ import annotations

import logging

import pytest

from deploy.backoff import with_backoff

log = logging.getLogger("test")


async def test_listed_failures_are_retried_with_capped_growing_delays() -> None:
    waits: list[float] = []
    tries = iter([OSError("down")] * 7 + [None])

    async def attempt() -> str:
        failure = next(tries)
        if failure is not None:
            raise failure
        return "connected"

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    assert await with_backoff(attempt, (OSError,), "thing", log, sleep) == "connected"
    assert waits == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


async def test_other_failures_propagate_at_once() -> None:
    async def attempt() -> None:
        raise ValueError("a bug, not an outage")

    async def sleep(seconds: float) -> None:
        raise AssertionError("must not wait")

    with pytest.raises(ValueError, match="a bug"):
        await with_backoff(attempt, (OSError,), "thing", log, sleep)
