"""The background refresh behind `/readyz` ends at shutdown, whenever the cancellation comes, and a hung
Redis fails `/readyz` without failing `/readyz/ingest`."""

from __future__ import annotations

import asyncio
import time

from deploy.settings import Settings
from server.readiness import REFRESH_S, Readiness


class JustChecked(Readiness):
    """A check that answers at once, and says when it has."""

    checked: asyncio.Event

    async def check(self) -> list[str]:
        self.checked.set()
        return []


async def test_a_refresh_cancelled_just_as_its_check_finishes_still_ends() -> None:
    readiness = JustChecked(Settings(), lambda: None, lambda: None)
    readiness.checked = asyncio.Event()
    running = asyncio.create_task(readiness.run())
    await readiness.checked.wait()
    # The check is done, and the refresh has not resumed yet: Python 3.11's wait_for swallows a
    # cancellation here, so the app's shutdown also says `stopped`, which ends the loop regardless.
    readiness.stopped = True
    running.cancel()
    # Not even one more refresh's sleep: every app shutdown (and test teardown) waited for it.
    done, _ = await asyncio.wait([running], timeout=REFRESH_S / 2)
    assert done, "the refresh went on after it was stopped and cancelled"


class HungRedis(Readiness):
    """NATS and the stream are fine; Redis never answers."""

    async def _nats(self) -> list[str]:
        return []

    async def _redis(self) -> list[str]:
        await asyncio.Event().wait()
        return []


async def test_a_hung_redis_fails_readyz_but_not_the_ingest_probe_and_the_check_still_ends() -> None:
    readiness = HungRedis(Settings(), lambda: None, lambda: None)
    started = time.monotonic()
    problems = await readiness.check()
    assert time.monotonic() - started < 2 * REFRESH_S  # well before a probe calls the refresh stale
    assert problems == ["redis: no answer within 1.5s (it hangs)"]
    assert readiness.ingest_problems == []
