"""A key retried in a chain, each retry within the dedup window of the one before, for longer than the
two windows the audit and the single-hour replay read at first: both read further back until they know
what the key's user last counted, so they judge its retry in the hour as live did."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from contract.hours import HOUR_MS, hour_token, partition_of
from contract.keys import Keys
from deploy.settings import Settings
from projector.audit.auditor import Auditor
from projector.audit.verdict import Verdict
from projector.replay.single_hour import replay_hour
from tests.conftest import Server
from tests.helpers import eventually, isolated_settings
from tests.integration.cells import stored

A = 490_200  # two fixed closed hours in 2025
B = A + 1
WINDOW_S = 2.0
GAP_S = 1.2
"""Between the retries: within the window (with room for a slow machine), so they form one chain."""


@pytest.fixture
def settings(nats_server: Server, redis_server: Server) -> Settings:
    return isolated_settings(nats_server.url, redis_server.url, dedup_window_s=WINDOW_S)


async def impressions(redis: Redis, settings: Settings, hour: int, user: str) -> int:
    p = partition_of(user, settings.partitions)
    return (await stored(redis, Keys(settings.key_prefix), 1, hour_token(hour), p))[2]


async def test_a_chain_of_retries_longer_than_two_windows_is_judged_as_live_judged_it(
    settings: Settings, nc: NATS, redis: Redis, client: httpx.AsyncClient, projector: None
) -> None:
    user = "chained"
    # Four sends in A then one in B, GAP_S apart in stream time: live counts the 1st, 3rd and 5th
    # (each a whole window after the last that counted). Read from two windows before the 5th alone,
    # the 2nd would seem to count, so the 5th, in B, would not. (The sleeps space the sends in stream
    # time, the one thing the dedup window measures; they wait for nothing.)
    for n, hour in enumerate((A, A, A, A, B)):
        if n:
            await asyncio.sleep(GAP_S)
        response = await client.post(
            f"/analytics?timestamp={hour * HOUR_MS + n}&user={user}&impression",
            headers={"Idempotency-Key": "order-1"},
        )
        assert response.status_code == 204, response.text
    live = await eventually(lambda: impressions(redis, settings, B, user), lambda n: n == 1)
    assert await impressions(redis, settings, A, user) == 2
    auditor = await Auditor.open(settings, nc, redis)
    assert (await auditor.hour(B)).verdict is Verdict.OK
    assert (await auditor.hour(A)).verdict is Verdict.OK

    await replay_hour(settings, nc, redis, B)
    assert await impressions(redis, settings, B, user) == live
    assert (await auditor.hour(B)).verdict is Verdict.OK
