"""The audit of cold hours: hours the hot window moved out of Redis are compared with the snapshot
entries reads go to, register for register, and a clean log audits clean."""

from __future__ import annotations

import httpx
import pytest
from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from contract.hours import HOUR_MS, hour_of, hour_token, partition_of, system_now_ms
from contract.keys import Keys
from deploy.settings import Settings
from projector.audit.auditor import Auditor
from projector.audit.verdict import Verdict
from tests.conftest import Server
from tests.helpers import eventually, isolated_settings


@pytest.fixture
def settings(nats_server: Server, redis_server: Server) -> Settings:
    return isolated_settings(nats_server.url, redis_server.url, snapshot_interval_s=1, hot_hours=2)


async def test_cold_hours_audit_clean_against_their_snapshots(
    settings: Settings, nc: NATS, redis: Redis, client: httpx.AsyncClient, projector: None
) -> None:
    now = hour_of(system_now_ms())
    cold = [now - 30, now - 10, now - 3]
    for hour in [*cold, now - 1]:
        for i in range(20):
            kind = "click" if i % 3 else "impression"
            path = f"/analytics?timestamp={hour * HOUR_MS + i}&user=u{i % 13}&{kind}"
            assert (
                await client.post(path, headers={"Idempotency-Key": f"k{hour}-{i % 7}"})
            ).status_code == 204
    keys = Keys(settings.key_prefix)

    holding = {partition_of(f"u{i}", settings.partitions) for i in range(13)}

    async def cold_everywhere() -> bool:
        """Every partition holding events has moved every cold hour out (each on its own schedule)."""
        for p in holding:
            tokens = {t.decode() if isinstance(t, bytes) else t for t in await redis.hgetall(keys.cold(1, p))}
            if not {hour_token(h) for h in cold} <= tokens:
                return False
        return True

    await eventually(cold_everywhere, bool, timeout=30)
    auditor = await Auditor.open(settings, nc, redis)

    async def audited() -> dict[int, Verdict]:
        return {h: (await auditor.hour(h)).verdict for h in [*cold, now - 1]}

    want = dict.fromkeys([*cold, now - 1], Verdict.OK)
    assert await eventually(audited, lambda v: v == want) == want
    for hour in cold:
        found = await auditor.hour(hour)
        assert {p.source for p in found.parts if p.log.clicks or p.log.impressions} == {"snapshot"}
        assert found.totals("served") == found.totals("log")
        assert found.totals("log")[0] > 0
        assert all(len(p.served.quarters) == 4 for p in found.parts)  # the entry's quarter-hours
    # Day rollups are never cold; their cold components are read from their hours' entries.
    days = await auditor.days(cold)
    assert days
    for token in days:
        day = await auditor.day(token)
        assert day.verdict is Verdict.OK, day.line()
