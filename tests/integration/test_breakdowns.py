"""Breakdowns against the real servers: per value of a dimension each click and impression counted
exactly, unique users as the cells hold them, `(none)`, `(other)` past the bound (per hour and
partition, in stream order), a filter equal to its row, the total equal to the unfiltered read, a
full replay equal to live, the audit naming a damaged value, a single-hour replay repairing it, a 409
for an hour whose breakdowns are not kept, and a breakdown by creative within one campaign (a
declared pair)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
import pytest
from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from contract.buckets import DAY_MS
from contract.cells import CellLayout, axis_counts
from contract.hours import HOUR_MS, hour_of, partition_of, system_now_ms
from contract.keys import Keys
from deploy.settings import Settings
from projector.audit.auditor import Auditor
from projector.audit.verdict import Verdict
from projector.replay.driver import replay
from projector.replay.single_hour import replay_hour
from tests.conftest import Server
from tests.helpers import eventually, isolated_settings, settle

BOUND = 3


@pytest.fixture
def settings(nats_server: Server, redis_server: Server) -> Settings:
    return isolated_settings(
        nats_server.url, redis_server.url, dimension_max_values=BOUND, day_zones="UTC,Asia/Kolkata"
    )


def workload(hour: int) -> list[tuple[str, str, dict[str, str]]]:
    """(user, click|impression, dimensions) in the order they are sent."""
    sent: list[tuple[str, str, dict[str, str]]] = []
    for i in range(20):
        sent.append((f"u{i}", "impression", {"campaign": "spring", "site": "a.com"}))
        if i < 10:
            sent.append((f"u{i}", "click", {"campaign": "spring", "creative": "c1"}))
    for i in (1, 2, 3):
        sent.append((f"u{i}", "click", {"campaign": "autumn"}))
        sent.append((f"u{i + 20}", "impression", {"campaign": "autumn"}))
    sent += [(f"s{i}", "impression", {"site": "x.com"}) for i in range(4)]  # no campaign
    sent += [(f"n{i}", "click" if i % 2 else "impression", {}) for i in range(6)]  # no dimension at all
    sent += [("flood", "impression", {"campaign": f"f{i}"}) for i in range(5)]  # past the bound
    sent += [(f"u{i}", "impression", {"campaign": f"f{i}"}) for i in range(5)]
    return sent


def model(
    sent: list[tuple[str, str, dict[str, str]]], partitions: int
) -> dict[str, tuple[set[str], int, int]]:
    """What each campaign row must hold: values admitted per partition in stream order, up to BOUND."""
    admitted: dict[int, set[str]] = defaultdict(set)
    rows: dict[str, tuple[set[str], int, int]] = defaultdict(lambda: (set(), 0, 0))
    for user, kind, dims in sent:
        value = dims.get("campaign", "(none)")
        p = partition_of(user, partitions)
        if value != "(none)" and value not in admitted[p]:
            if len(admitted[p]) < BOUND:
                admitted[p].add(value)
            else:
                value = "(other)"
        users, clicks, impressions = rows[value]
        rows[value] = (users | {user}, clicks + (kind == "click"), impressions + (kind == "impression"))
    return rows


def parse(body: str) -> dict[str, tuple[int, int, int]]:
    lines = body.splitlines()
    assert lines[0] == "campaign,unique_users,clicks,impressions,ctr"
    return {name: (int(u), int(c), int(i)) for name, u, c, i, _ in (line.split(",") for line in lines[1:])}


def matches(found: dict[str, tuple[int, int, int]], want: dict[str, tuple[set[str], int, int]]) -> bool:
    for name in {*want, "(none)", "(other)"}:
        users, clicks, impressions = want.get(name, (set(), 0, 0))
        if found.get(name) != (len(users), clicks, impressions):
            return False
    return True


async def test_each_value_counts_exactly_past_the_bound_as_other_and_a_replay_gives_the_same(
    settings: Settings, client: httpx.AsyncClient, projector: None, nc: NATS, redis: Redis
) -> None:
    hour = hour_of(system_now_ms()) - 5
    sent = workload(hour)
    for n, (user, kind, dims) in enumerate(sent):
        extra = "".join(f"&{k}={v}" for k, v in dims.items())
        answer = await client.post(f"/analytics?timestamp={hour * HOUR_MS + n}&user={user}&{kind}{extra}")
        assert answer.status_code == 204, answer.text
    retried = await client.post(
        f"/analytics?timestamp={hour * HOUR_MS}&user=u0&click&campaign=spring",
        headers={"Idempotency-Key": "k1"},
    )
    again = await client.post(
        f"/analytics?timestamp={hour * HOUR_MS}&user=u0&click&campaign=spring",
        headers={"Idempotency-Key": "k1"},
    )
    assert retried.status_code == again.status_code == 204
    sent.append(("u0", "click", {"campaign": "spring"}))  # once
    want = model(sent, settings.partitions)
    assert want["(other)"][2] > 0  # the bound is reached in some partition
    url = f"/analytics/breakdown?by=campaign&timestamp={hour * HOUR_MS}&top=1000"

    async def rows() -> dict[str, tuple[int, int, int]]:
        return parse((await client.get(url)).text)

    await eventually(rows, lambda found: matches(found, want), timeout=30)
    await settle(nc, redis, settings)
    live = await rows()
    assert matches(live, want), live
    unfiltered = (await client.get(f"/analytics?timestamp={hour * HOUR_MS}")).text
    u, c, i = live["total"]
    assert unfiltered == f"unique_users,{u}\nclicks,{c}\nimpressions,{i}\n"
    assert (c, i) == (sum(v[1] for v in want.values()), sum(v[2] for v in want.values()))
    spring = (await client.get(f"/analytics?timestamp={hour * HOUR_MS}&campaign=spring")).text
    assert spring == "unique_users,{}\nclicks,{}\nimpressions,{}\n".format(*live["spring"])
    top = parse((await client.get(f"/analytics/breakdown?by=campaign&timestamp={hour * HOUR_MS}&top=1")).text)
    assert list(top) == ["spring", "(none)", "(other)", "total"]

    await replay(settings, nc, redis)
    assert await rows() == live

    # A damaged value is rebuilt by a single-hour replay, which swaps the hour's axis cells with it.
    keys, layout = Keys(settings.key_prefix), CellLayout(Keys(settings.key_prefix))
    spring_p = partition_of("u0", settings.partitions)
    gen = keys.live_generation(await redis.get(keys.generation(spring_p)))
    index = layout.axes(gen, spring_p, hour)
    clicks, impressions = axis_counts(await redis.hget(index, "campaign=spring"))
    await redis.hset(index, "campaign=spring", f"{clicks + 7} {impressions}")
    assert (await rows())["spring"] != live["spring"]
    # The audit recounts every value from the log and names the damaged one, and only it.
    audited = await (await Auditor.open(settings, nc, redis)).hour(hour)
    assert audited.verdict is Verdict.MISMATCH
    assert audited.differs == (f"p{spring_p} campaign=spring clicks: log {clicks}, served {clicks + 7}",)
    await replay_hour(settings, nc, redis, hour)
    assert await rows() == live
    assert (await (await Auditor.open(settings, nc, redis)).hour(hour)).verdict is Verdict.OK

    # An hour whose axis cells are gone (as if counted before breakdowns) is a 409, never wrong rows.
    for p in range(settings.partitions):
        gen = keys.live_generation(await redis.get(keys.generation(p)))
        await redis.delete(CellLayout(keys).axes(gen, p, hour))
    gone = await client.get(url)
    assert gone.status_code == 409, gone.text
    assert "./just replay" in gone.text


async def test_a_period_sums_each_values_counts_over_its_hours_and_unions_its_users_as_a_filtered_range_does(
    client: httpx.AsyncClient, projector: None
) -> None:
    first = hour_of(system_now_ms()) - 8
    sent = [
        *((first, u, "click", "&campaign=x") for u in ("a", "b", "c")),
        (first, "e", "impression", ""),
        *((first + 1, u, "impression", "&campaign=x") for u in ("a", "b")),
        (first + 1, "d", "click", "&campaign=y"),
    ]
    for n, (hour, user, kind, extra) in enumerate(sent):
        answer = await client.post(f"/analytics?timestamp={hour * HOUR_MS + n}&user={user}&{kind}{extra}")
        assert answer.status_code == 204, answer.text
    period = f"from={first * HOUR_MS + 5}&to={(first + 2) * HOUR_MS}"
    want = {"x": (3, 3, 2), "y": (1, 1, 0), "(none)": (1, 0, 1), "(other)": (0, 0, 0), "total": (5, 4, 3)}

    async def rows() -> dict[str, tuple[int, int, int]]:
        return parse((await client.get(f"/analytics/breakdown?by=campaign&{period}")).text)

    assert await eventually(rows, lambda found: found == want, timeout=30) == want
    ranged = (await client.get(f"/analytics/range?{period}")).text.splitlines()[-1]
    assert ranged == "total,5,4,3"  # the period's total is the range read's: users a union
    filtered = (await client.get(f"/analytics/range?{period}&campaign=x")).text.splitlines()
    assert [line.split(",", 1)[1] for line in filtered[1:]] == ["3,3,0", "2,0,2", "3,3,2"]  # users a union
    one = parse(
        (await client.get(f"/analytics/breakdown?by=campaign&timestamp={(first + 1) * HOUR_MS}")).text
    )
    assert one["x"] == (2, 0, 2)
    empty = await client.get(
        f"/analytics/breakdown?by=campaign&from={first * HOUR_MS + 5}&to={first * HOUR_MS}"
    )
    assert parse(empty.text) == {"(none)": (0, 0, 0), "(other)": (0, 0, 0), "total": (0, 0, 0)}


def pair_model(
    sent: list[tuple[str, str, dict[str, str]]], partitions: int, campaign: str
) -> dict[str, tuple[set[str], int, int]]:
    """The creative rows of one campaign: pairs admitted per partition in stream order up to BOUND
    (over every campaign), later new pairs under the campaign's (other); no creative is (none)."""
    admitted: dict[int, set[tuple[str, str]]] = defaultdict(set)
    rows: dict[str, tuple[set[str], int, int]] = defaultdict(lambda: (set(), 0, 0))
    for user, kind, dims in sent:
        if "campaign" not in dims:
            continue
        pair, p = (dims["campaign"], dims.get("creative", "(none)")), partition_of(user, partitions)
        if pair[1] != "(none)" and pair not in admitted[p]:
            if len(admitted[p]) < BOUND:
                admitted[p].add(pair)
            else:
                pair = (pair[0], "(other)")
        if pair[0] == campaign:
            users, clicks, impressions = rows[pair[1]]
            rows[pair[1]] = (users | {user}, clicks + (kind == "click"), impressions + (kind == "impression"))
    return rows


async def test_a_breakdown_by_creative_within_a_campaign_counts_each_pair_and_totals_the_campaign(
    settings: Settings, client: httpx.AsyncClient, projector: None
) -> None:
    hour = hour_of(system_now_ms()) - 3
    sent: list[tuple[str, str, dict[str, str]]] = [
        *((f"u{i}", "click", {"campaign": "spring", "creative": "c1"}) for i in range(5)),
        *(
            (f"u{i}", "impression", {"campaign": "spring", "creative": "c2", "site": "a"})
            for i in range(3, 9)
        ),
        *((f"u{i}", "impression", {"campaign": "spring"}) for i in (10, 11)),
        ("u20", "click", {"campaign": "autumn", "creative": "c1"}),
        ("u21", "click", {"creative": "c1"}),  # no campaign: in no pair
        *(("flood", "impression", {"campaign": "spring", "creative": f"f{i}"}) for i in range(5)),
    ]
    for n, (user, kind, dims) in enumerate(sent):
        extra = "".join(f"&{k}={v}" for k, v in dims.items())
        answer = await client.post(f"/analytics?timestamp={hour * HOUR_MS + n}&user={user}&{kind}{extra}")
        assert answer.status_code == 204, answer.text
    want = pair_model(sent, settings.partitions, "spring")
    assert want["(other)"][2] > 0  # the bound is reached in the flood's partition
    assert want["(none)"] == ({"u10", "u11"}, 0, 2)

    async def rows() -> dict[str, tuple[int, int, int]]:
        body = (
            await client.get(f"/analytics/breakdown?by=creative&campaign=spring&timestamp={hour * HOUR_MS}")
        ).text
        return parse(body.replace("creative,unique", "campaign,unique", 1))

    found = await eventually(rows, lambda found: matches(found, want), timeout=30)
    spring = (await client.get(f"/analytics?timestamp={hour * HOUR_MS}&campaign=spring")).text
    assert spring == "unique_users,{}\nclicks,{}\nimpressions,{}\n".format(*found["total"])
    assert found["total"][1:] == (5, 13)
    refused = await client.get(f"/analytics/breakdown?by=site&campaign=spring&timestamp={hour * HOUR_MS}")
    assert refused.status_code == 400
    assert "ANALYTICS_DIMENSION_PAIRS: campaign:creative" in refused.text


async def test_a_kolkata_day_by_campaign_counts_exactly_the_events_between_its_midnights(
    settings: Settings, client: httpx.AsyncClient, projector: None, nc: NATS, redis: Redis
) -> None:
    """Asia/Kolkata's days start at 18:30 UTC, inside an hour: that hour keeps its breakdowns per
    quarter-hour too (ANALYTICS_DAY_ZONES), so a local day by value is exact to the minute."""
    midnight = (system_now_ms() // DAY_MS - 2) * DAY_MS + 18 * HOUR_MS + 30 * 60_000
    sent = [
        (midnight - 600_000, "a", "click", "k"),  # the day before
        (midnight + 600_000, "b", "click", "k"),
        (midnight + 3 * HOUR_MS, "c", "impression", "k"),
        (midnight + DAY_MS - 300_000, "d", "click", "j"),
        (midnight + DAY_MS + 300_000, "e", "click", "k"),  # the day after
        (midnight + 3 * HOUR_MS, "f", "impression", ""),
    ]
    for ts, user, kind, campaign in sent:
        extra = f"&campaign={campaign}" if campaign else ""
        answer = await client.post(f"/analytics?timestamp={ts}&user={user}&{kind}{extra}")
        assert answer.status_code == 204, answer.text
    day = f"from={midnight + 1}&to={midnight + DAY_MS - 1}&tz=Asia/Kolkata"
    want = {"k": (2, 1, 1), "j": (1, 1, 0), "(none)": (1, 0, 1), "(other)": (0, 0, 0), "total": (4, 2, 2)}

    async def rows() -> dict[str, tuple[int, int, int]]:
        return parse((await client.get(f"/analytics/breakdown?by=campaign&{day}")).text)

    assert await eventually(rows, lambda found: found == want, timeout=30) == want
    await settle(nc, redis, settings)
    await replay_hour(settings, nc, redis, hour_of(midnight))  # swaps the hour's quarter-hours' axes too
    assert await rows() == want
    by_day = await client.get(f"/analytics/range?{day}&granularity=day&campaign=k")
    local = datetime.fromtimestamp(midnight / 1000, ZoneInfo("Asia/Kolkata")).isoformat()
    assert by_day.text.splitlines()[1:] == [f"{local},2,1,1", "total,2,1,1"], by_day.text
    hours = await client.get(f"/analytics/range?{day}&granularity=hour&campaign=k")
    assert hours.status_code == 400  # its local hours start inside UTC hours: not kept by value
    assert "ANALYTICS_DAY_ZONES" in hours.text
