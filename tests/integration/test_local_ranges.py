"""Range reads in local time zones against real servers, through HTTP: events one minute either side
of local midnight land in the right local day (Kolkata and New York rolled up as day rollups, Kathmandu
read from hours and quarter-hours), with exact counts and union uniques; split reads (one script per
partition, as on a Redis Cluster) answer as one node does."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx
import pytest
from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from api.cold import ColdHour
from api.ranges import parse_range
from api.reader import Reader
from contract import hll
from contract.buckets import parse_phases, quarter_token
from contract.cells import Cell, CellLayout
from contract.hours import HOUR_MS, hour_token
from contract.keys import Keys
from deploy.settings import Settings
from tests.conftest import Server
from tests.helpers import isolated_settings, settle

pytestmark = pytest.mark.usefixtures("projector")

MINUTE = 60_000
ZONES = "Asia/Kolkata,America/New_York"
# Local midnights: an ordinary Kolkata day, a Kathmandu day, New York's 23-hour and 25-hour days.
MIDNIGHTS = {
    "Asia/Kolkata": "2026-11-25T00:00+05:30",
    "Asia/Kathmandu": "2026-11-20T00:00+05:45",
    "America/New_York": "2026-03-08T00:00-05:00",
}
NY_FALL = "2026-11-02T00:00-05:00"  # the end of the 25-hour 2026-11-01


@pytest.fixture
def settings(nats_server: Server, redis_server: Server) -> Settings:
    return isolated_settings(nats_server.url, redis_server.url, day_zones=ZONES)


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


async def post(client: httpx.AsyncClient, at: int, user: str, kind: str) -> None:
    assert (await client.post(f"/analytics?timestamp={at}&user={user}&{kind}")).status_code == 204


async def rows(client: httpx.AsyncClient, tz: str, frm: int, to: int, granularity: str) -> dict[str, Any]:
    path = f"/analytics/range?from={frm}&to={to}&granularity={granularity}&tz={tz}"
    response = await client.get(path, headers={"Accept": "application/json"})
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def row(unique: int, clicks: int, impressions: int) -> dict[str, int]:
    return {"unique_users": unique, "clicks": clicks, "impressions": impressions}


async def test_a_minute_either_side_of_local_midnight_lands_in_its_own_local_day(
    client: httpx.AsyncClient, nc: NATS, redis: Redis, settings: Settings
) -> None:
    for tz, midnight in [*MIDNIGHTS.items(), ("America/New_York", NY_FALL)]:
        at = ms(midnight)
        z = tz.split("/")[1][:4] + midnight[5:10]
        # before: ann (click), bob (impression); after: ann again (click), cid (click), dee (impression)
        await post(client, at - MINUTE, f"ann{z}", "click")
        await post(client, at - MINUTE + 1, f"bob{z}", "impression")
        await post(client, at + MINUTE, f"ann{z}", "click")
        await post(client, at + MINUTE + 1, f"cid{z}", "click")
        await post(client, at + MINUTE + 2, f"dee{z}", "impression")
    await settle(nc, redis, settings)
    keys = Keys(settings.key_prefix)

    for tz, midnight in MIDNIGHTS.items():
        at = ms(midnight)
        days = await rows(client, tz, at - MINUTE, at + MINUTE, "day")
        buckets = days["buckets"]
        assert isinstance(buckets, list)
        assert [b["start"] for b in buckets][1] == datetime.fromisoformat(midnight).isoformat()
        assert [{k: v for k, v in b.items() if k != "start"} for b in buckets] == [row(2, 1, 1), row(3, 2, 1)]
        assert days["total"] == row(4, 3, 2)
        hours = await rows(client, tz, at - MINUTE, at + MINUTE, "hour")
        assert hours["total"] == row(4, 3, 2)

    spring = await rows(
        client,
        "America/New_York",
        ms(MIDNIGHTS["America/New_York"]),
        ms(MIDNIGHTS["America/New_York"]) + 1,
        "day",
    )
    assert spring["buckets"] == [{"start": "2026-03-08T00:00:00-05:00", **row(3, 2, 1)}]
    fall = await rows(client, "America/New_York", ms(NY_FALL) - MINUTE, ms(NY_FALL) + MINUTE, "day")
    assert [b["start"] for b in fall["buckets"]] == ["2026-11-01T00:00:00-04:00", "2026-11-02T00:00:00-05:00"]
    assert fall["total"] == row(4, 3, 2)
    # The same events in UTC: one UTC day holds both sides of New York's midnight.
    utc = await rows(client, "UTC", ms(NY_FALL) - MINUTE, ms(NY_FALL) + MINUTE, "day")
    assert utc["buckets"] == [{"start": "2026-11-02", **row(4, 3, 2)}]

    # Kolkata's and New York's days were read from day rollups: the generation keeps their phases.
    assert parse_phases(await redis.get(keys.phases(1, 0))) == settings.day_phases
    assert 1110 in settings.day_phases  # Kolkata's days start at 18:30 UTC

    # One script over every partition, or one per partition (as on a Redis Cluster): the same answers.
    for tz, midnight in MIDNIGHTS.items():
        for granularity in ("day", "hour"):
            at = ms(midnight)
            query = {
                "from": [str(at - 3 * 86_400_000)],
                "to": [str(at + 86_400_000)],
                "granularity": [granularity],
                "tz": [tz],
            }
            q = parse_range(query, 10_000)
            single = await Reader(redis, keys, settings.partitions).spans(q.spans)
            split = await Reader(redis, keys, settings.partitions, split_by_partition=True).spans(q.spans)
            assert single == split
            total = single[1]
            assert (total.unique_users, total.clicks, total.impressions) == (4, 3, 2)


class Snapshots:
    """A snapshot store holding one cold hour of partition 1 with its quarter-hours (a ColdSource)."""

    def __init__(self, hour: str, quarters: list[set[str]]) -> None:
        self.token = hour
        registers = [hll.sketch(users) for users in quarters]
        self.entry = ColdHour(
            hll.merge(registers),
            sum(len(u) for u in quarters),
            0,
            tuple(ColdHour(r, len(u), 0) for r, u in zip(registers, quarters, strict=True)),
        )
        self.reads = 0

    async def hour(self, partition: int, token: str, at: int) -> ColdHour:
        assert (partition, token, at) == (1, self.token, 7)
        self.reads += 1
        return self.entry


async def test_a_quarter_hour_of_a_cold_hour_is_read_from_its_hours_snapshot_entry(redis: Redis) -> None:
    keys, hour = Keys(f"coldq{time.monotonic_ns()}"), ms("2026-11-25T04:00Z") // HOUR_MS
    token = hour_token(hour)
    # A user lives in one partition (contract.hours.partition_of), so the partitions share none.
    cold_quarters = [{"c0"}, set(), {"c2", "c2b"}, {"c3"}]
    hot_quarters = [{"h0"}, {"h1"}, {"h2", "shared"}, set()]
    for p in (0, 1):
        await redis.set(keys.phases(1, p), "0")
    for q, users in enumerate(hot_quarters):  # partition 0 keeps the hour in Redis
        for cell in (token, quarter_token(hour, q)):
            for user in users:
                await redis.pfadd(CellLayout(keys).users(Cell(1, 0, cell)), user)
                await redis.hincrby(CellLayout(keys).counts(Cell(1, 0, cell)), "clicks", 1)
    await redis.hset(keys.cold(1, 1), token, 7)  # partition 1's hour left Redis for entry 7
    store = Snapshots(token, cold_quarters)
    start = hour * HOUR_MS
    # Kolkata's local hour 09:30 starts half way through the UTC hour: two quarters of it, two of the next.
    local_hour = parse_range(
        {"from": [str(start + 1_800_000)], "to": [str(start + 1_800_001)], "tz": ["Asia/Kolkata"]}, 10
    )
    assert local_hour.labels == ("2026-11-25T10:00:00+05:30",)
    answers = []
    for split in (False, True):
        reader = Reader(redis, keys, 2, store, split_by_partition=split)
        answers.append(await reader.spans([*local_hour.spans, (start, start + HOUR_MS)]))
    assert answers[0] == answers[1]
    (local, whole), total = answers[0]
    assert (local.unique_users, local.clicks) == (5, 5)  # h2, shared, c2, c2b, c3: 2 + 3 clicks
    assert (whole.unique_users, whole.clicks) == (8, 8)  # h0 h1 h2 shared c0 c2 c2b c3
    assert (total.unique_users, total.clicks) == (8, 5 + 8)  # uniques: the union; counts: the rows summed
    assert store.reads >= 2
