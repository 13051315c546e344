"""How the Redis read adapter names the faults it meets, so the error renderer answers them 503, not 500."""

from __future__ import annotations

from typing import Any, cast

import pytest
import redis.exceptions
from redis.asyncio import Redis

from api.get import REDIS_ERRORS
from api.reader import Reader
from contract.keys import Keys
from tests.unit.test_key_slots import HOUR, PARTITIONS, Pipe, Recorder


async def test_a_connection_closed_under_a_cluster_pipeline_is_a_connection_error() -> None:
    """redis-py's cluster pipeline once passed on uvloop's RuntimeError ("the handler is closed") while
    a slot moved, and the GET answered 500; the reader makes it what it is, Redis unavailable (503)."""

    class Closing(Pipe):
        async def execute(self) -> list[Any]:
            raise RuntimeError(
                "Command # 10 (EVALSHA ...) of pipeline caused error: ('unable to perform operation on "
                "<TCPTransport closed=True reading=False>; the handler is closed',)"
            )

    class Failing(Recorder):
        def pipeline(self, transaction: bool = True) -> Pipe:
            return Closing(self)

    reader = Reader(cast(Redis, Failing()), Keys("hg"), PARTITIONS, split_by_partition=True)
    with pytest.raises(redis.exceptions.ConnectionError, match="the handler is closed"):
        await reader.hour(HOUR)
    assert issubclass(redis.exceptions.ConnectionError, REDIS_ERRORS)
