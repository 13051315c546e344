"""The hot window: hours older than ANALYTICS_HOT_HOURS leave Redis once snapshotted, and every read,
range, wipe, replay, restart and late event still gives exact answers through the snapshot store."""

from __future__ import annotations

import functools
from collections.abc import Iterable

import httpx
import nats
import pytest
from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from api.cold import ColdStore
from api.reader import HourTotals, Reader
from contract.hours import HOUR_MS, hour_of, hour_token, partition_of, system_now_ms
from contract.keys import Keys
from deploy.settings import Settings
from projector.replay.driver import replay
from projector.replay.single_hour import replay_hour
from tests.conftest import Server
from tests.helpers import eventually, metric
from tests.integration.conftest import Roles, production_stack, scoped_settings, with_roles


@pytest.fixture
def settings(own_nats: Server, own_redis: Server) -> Settings:
    # Servers of this test's own (Redis is FLUSHALLed), with role users: the stack runs under its roles.
    return scoped_settings(
        own_nats, own_redis, log_keep_s=1, snapshot_interval_s=1, hot_hours=2, read_staleness_s=0.2
    )


@pytest.fixture
def roles(settings: Settings, own_nats: Server, own_redis: Server) -> Roles:
    return with_roles(settings, own_nats, own_redis)


def users_by_hour(now: int) -> dict[int, list[str]]:
    return {
        now: ["ann", "bob", "cy"],
        now - 1: ["bob", "cy", "dee"],
        now - 3: ["ann", "eve"],
        now - 10: ["fay"],
        now - 30: ["gus", "gus2"],
        0: ["ida", "jo", "kim", "lu"],  # 1970-01-01T00
    }


def expected(users: dict[int, list[str]]) -> dict[int, HourTotals]:
    # Each user clicks once and is shown one impression per hour.
    return {h: HourTotals(len(u), len(u), len(u)) for h, u in users.items()}


async def answers(http: httpx.AsyncClient, hours: Iterable[int]) -> dict[int, HourTotals]:
    found = {}
    for hour in hours:
        response = await http.get(f"/analytics?timestamp={hour * HOUR_MS + 1}")
        assert response.status_code == 200, response.text
        values = dict(line.split(",") for line in response.text.splitlines())
        found[hour] = HourTotals(
            int(values["unique_users"]), int(values["clicks"]), int(values["impressions"])
        )
    return found


async def direct(
    redis: Redis, nc: NATS, settings: Settings, hours: Iterable[int], *, split: bool = False
) -> dict[int, HourTotals]:
    """What a fresh reader (no HTTP cache) answers; `split`: one read per partition, as on a cluster."""
    cold = ColdStore(nc, settings.stream_name)
    reader = Reader(redis, Keys(settings.key_prefix), settings.partitions, cold, split_by_partition=split)
    return {h: await reader.hour(h) for h in hours}


async def ranges_both_ways(redis: Redis, nc: NATS, settings: Settings, hours: list[int]) -> None:
    """A range over hot and cold hours answers the same read per partition as in one script."""
    found = []
    for split in (False, True):
        cold = ColdStore(nc, settings.stream_name)
        reader = Reader(redis, Keys(settings.key_prefix), settings.partitions, cold, split_by_partition=split)
        found.append([await reader.buckets([[h] for h in hours]), await reader.buckets([hours])])
    assert found[0] == found[1]


def cold_reads(source: str) -> float:
    return metric("hourglass_cold_reads_total", {"source": source})


def cold_reads_above(source: str, before: float, _: object) -> bool:
    return cold_reads(source) > before


async def keys_naming(redis: Redis, settings: Settings, hours: Iterable[int]) -> list[str]:
    """Keys of the hours or their quarter-hours (`:<YYYYMMDDHH>...`), not day rollups (`:d<...>`)."""
    tokens = [f":{hour_token(h)}" for h in hours]
    return [
        key.decode()
        async for key in redis.scan_iter(match=f"{settings.key_prefix}:*")
        if any(t in key.decode() for t in tokens)
    ]


async def test_hours_outside_the_window_leave_redis_and_every_answer_stays_exact(
    settings: Settings, roles: Roles, own_nats: Server, own_redis: Server
) -> None:
    # The HTTP process reads cold hours and change notices as `api`; the projector snapshots,
    # compacts, evicts and thaws as `projector`. The test itself is admin.
    nc = await nats.connect(own_nats.url)
    redis = Redis.from_url(own_redis.url)
    now = hour_of(system_now_ms())
    users = users_by_hour(now)
    want = expected(users)
    cold = [now - 3, now - 10, now - 30, 0]
    store_reads_before = cold_reads("store")  # the registry is the process's: earlier tests' reads count
    async for http in production_stack(settings, roles=roles):
        for hour, names in users.items():
            for user in names:
                for kind in ("click", "impression"):
                    path = f"/analytics?timestamp={hour * HOUR_MS + 5}&user={user}&{kind}"
                    assert (await http.post(path)).status_code == 204

        # The log is compacted below the snapshots, and the cold hours leave Redis entirely.
        info = functools.partial(nc.jetstream().stream_info, settings.stream_name)
        await eventually(info, lambda i: i.state.first_seq > 1, 30)
        assert await eventually(lambda: keys_naming(redis, settings, cold), lambda k: k == [], 30) == []
        assert await keys_naming(redis, settings, [now]) != []

        # Every hour answers exactly, the cold ones read through; later reads are served from memory.
        read = functools.partial(answers, http, want)
        assert await eventually(read, lambda a: a == want) == want
        from_store, from_memory = cold_reads("store"), cold_reads("memory")
        assert from_store - store_reads_before >= len(cold)
        await eventually(read, functools.partial(cold_reads_above, "memory", from_memory))
        assert cold_reads("store") == from_store
        assert await direct(redis, nc, settings, want) == want
        assert await direct(redis, nc, settings, want, split=True) == want
        await ranges_both_ways(redis, nc, settings, sorted(want))

        # A range over the last four hours: four rows, and a total whose uniques are the union.
        frm, to = (now - 3) * HOUR_MS, (now + 1) * HOUR_MS
        response = await http.get(f"/analytics?from={frm}&to={to}")
        assert response.status_code == 200
        rows = response.text.splitlines()
        assert len(rows) == 6  # header, four hours, total
        assert [row.split(",", 1)[1] for row in rows[1:5]] == ["2,2,2", "0,0,0", "3,3,3", "3,3,3"]
        assert rows[5] == "total,5,8,8"  # ann, bob, cy, dee, eve: not 2 + 3 + 3
        # A range too long for one script (2,000 hours by day) is read by the pipelined path.
        frm = (now - 2000) * HOUR_MS
        response = await http.get(f"/analytics?from={frm}&to={to}&granularity=day")
        assert response.status_code == 200
        assert response.text.splitlines()[-1] == "total,8,11,11"  # everyone but 1970's users

        # FLUSHALL: the hot hours come back from the snapshots and the tail; the cold stay cold.
        await redis.flushall()
        assert await eventually(lambda: direct(redis, nc, settings, want), lambda a: a == want) == want
        assert await keys_naming(redis, settings, cold) == []

        await replay(settings, nc, redis)
        assert await direct(redis, nc, settings, want) == want
        assert await direct(redis, nc, settings, want, split=True) == want
        await ranges_both_ways(redis, nc, settings, sorted(want))

        # One cold hour rebuilt: it is back in Redis, exact, and leaves again after its next snapshot.
        await replay_hour(settings, nc, redis, now - 10)
        assert await direct(redis, nc, settings, want) == want
        assert await eventually(lambda: keys_naming(redis, settings, cold), lambda k: k == [], 30) == []
        assert await direct(redis, nc, settings, want) == want

    # A full restart of app and projector.
    async for http in production_stack(settings, roles=roles):
        read = functools.partial(answers, http, want)
        assert await eventually(read, lambda a: a == want) == want

        # A late event for the hour 30 hours ago adds to it, and it leaves Redis again.
        thawed = metric("hourglass_projector_hours_thawed_total")
        gus = partition_of("gus", settings.partitions)
        # A user of the partition that holds the hour's users, so that partition's part of it thaws.
        late = next(f"late{i}" for i in range(1000) if partition_of(f"late{i}", settings.partitions) == gus)
        path = f"/analytics?timestamp={(now - 30) * HOUR_MS}&user={late}&click"
        assert (await http.post(path)).status_code == 204
        want[now - 30] = HourTotals(3, 3, 2)
        assert await eventually(read, lambda a: a == want) == want
        assert metric("hourglass_projector_hours_thawed_total") == thawed + 1
        assert await eventually(lambda: keys_naming(redis, settings, cold), lambda k: k == [], 30) == []
        assert await direct(redis, nc, settings, want) == want
    await redis.aclose()
    await nc.close()
