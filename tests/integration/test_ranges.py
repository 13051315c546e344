"""Range reads against real servers: rows per bucket, sums, and uniques as the union over the range."""

from __future__ import annotations

import httpx
import pytest
from redis.asyncio import Redis

from api import range_read
from api.reader import Reader
from contract.hours import HOUR_MS
from contract.keys import Keys
from deploy.settings import Settings
from tests.helpers import eventually

pytestmark = pytest.mark.usefixtures("projector")

BASE = 493_900  # an hour index (2026-05-06T04:00Z)


async def post(client: httpx.AsyncClient, hour: int, user: str, kind: str) -> None:
    assert (
        await client.post(f"/analytics?timestamp={hour * HOUR_MS + 5}&user={user}&{kind}")
    ).status_code == 204


async def test_a_range_answers_a_row_per_hour_and_a_total_whose_uniques_are_the_union(
    client: httpx.AsyncClient,
) -> None:
    # alice in every hour, bob in two, a newcomer each hour: 4 + 1 + 1 = 6 distinct users, 10 visits.
    for i, hour in enumerate(range(BASE, BASE + 4)):
        await post(client, hour, "alice", "click")
        await post(client, hour, f"new{i}", "impression")
        if i % 2:
            await post(client, hour, "bob", "click")
    path = f"/analytics?from={BASE * HOUR_MS + 1234}&to={(BASE + 4) * HOUR_MS}"
    expected = (
        "hour,unique_users,clicks,impressions\n"
        "2026-05-06T04:00:00Z,2,1,1\n"
        "2026-05-06T05:00:00Z,3,2,1\n"
        "2026-05-06T06:00:00Z,2,1,1\n"
        "2026-05-06T07:00:00Z,3,2,1\n"
        "total,6,6,4\n"
    )
    response = await eventually(lambda: client.get(path), lambda r: r.text == expected)
    assert response.headers["content-type"].startswith("text/csv")

    as_json = (await client.get(path, headers={"Accept": "application/json"})).json()
    assert as_json["total"] == {"unique_users": 6, "clicks": 6, "impressions": 4}
    assert as_json["buckets"][0]["start"] == "2026-05-06T04:00:00Z"

    day = await client.get(f"/analytics?from={BASE * HOUR_MS}&to={(BASE + 1) * HOUR_MS}&granularity=day")
    assert day.text == "day,unique_users,clicks,impressions\n2026-05-06,6,6,4\ntotal,6,6,4\n"


async def test_a_range_over_the_bucket_limit_is_a_400_naming_it(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/analytics?from=0&to={8785 * HOUR_MS}")
    assert response.status_code == 400
    assert "at most 8784 (ANALYTICS_RANGE_MAX_BUCKETS)" in response.text


async def test_the_longest_range_allowed_reads_in_one_go(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/analytics?from=0&to={8784 * HOUR_MS}&granularity=hour")
    assert response.status_code == 200
    lines = response.text.splitlines()
    assert len(lines) == 8784 + 2
    assert lines[0] == "hour,unique_users,clicks,impressions"
    assert lines[1].startswith("1970-01-01T00:00:00Z,")
    assert lines[-1].startswith("total,")


async def test_the_script_and_the_pipeline_read_a_range_alike(
    client: httpx.AsyncClient, redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i, hour in enumerate(range(BASE + 10, BASE + 16)):
        await post(client, hour, f"r{i % 3}", "click" if i % 2 else "impression")
    reader = Reader(redis, Keys(settings.key_prefix), settings.partitions)
    days = [tuple(range(BASE + 10, BASE + 13)), tuple(range(BASE + 13, BASE + 16))]
    await eventually(lambda: reader.buckets(days), lambda r: r[1].clicks + r[1].impressions == 6)
    by_script = await reader.buckets(days)
    # A total naming more keys than a script can unpack is counted by PFCOUNT in a pipeline; a row
    # naming more is counted here from raw registers.
    monkeypatch.setattr(range_read, "SCRIPT_MAX_KEYS", 3 * settings.partitions)
    assert await reader.buckets(days) == by_script
    monkeypatch.setattr(range_read, "SCRIPT_MAX_KEYS", 0)
    assert await reader.buckets(days) == by_script


async def test_an_unknown_zone_is_a_400_naming_tz(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/analytics/range?from=0&to={HOUR_MS}&tz=Mars/Olympus")
    assert response.status_code == 400
    assert response.text.startswith("tz")
    assert "IANA time zone" in response.text
    as_json = await client.get(
        f"/analytics?from=0&to={HOUR_MS}&tz=Mars/Olympus", headers={"Accept": "application/json"}
    )
    assert as_json.json()["parameter"] == "tz"
