"""The whole stack as processes (HTTP server, projector, replay, audit) on a single Valkey and on a
Valkey cluster of 3 primaries with replicas, both with ANALYTICS_DAY_ZONES=UTC,Asia/Kolkata: the same
events give the same answers, every hour, a range by hour and by day, local hours and days in
Asia/Kolkata (days from day rollups) and local days in Asia/Kathmandu (from hours and quarter-hours),
breakdowns by campaign and by creative within a campaign (a declared pair) over the last hours,
after a full replay and after a single hour's replay; local rows and breakdown rows match the truth
of the workload."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import httpx
import pytest
from redis.exceptions import MovedError

from api.reader import Reader
from contract.buckets import MINUTE_MS, day_start, day_token, parse_phases
from contract.cells import Cell, CellLayout
from contract.hours import HOUR_MS, hour_of, hour_token, partition_of, system_now_ms
from contract.keys import Keys
from contract.slots import key_slot, partition_slot
from deploy.projections_client import connect, node_client
from deploy.servers import ROOT
from deploy.settings import Settings
from tests.conftest import running
from tests.helpers import eventually, settings_env
from tests.integration.conftest import Roles, make_stream, roles_on, spawn, wait_ready
from tests.integration.valkey_cluster import ValkeyCluster, running_cluster
from tests.integration.workload import Truth, parse_text, post_path

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

DAY_MS = 24 * HOUR_MS
DAY_ZONES = "UTC,Asia/Kolkata"
# Read as ranges over the whole span: Kolkata's days are rolled up (DAY_ZONES), Kathmandu's are not.
LOCAL_READS = (("Asia/Kolkata", "hour"), ("Asia/Kolkata", "day"), ("Asia/Kathmandu", "day"))
MIDNIGHT_MINUTE = {"Asia/Kolkata": 30, "Asia/Kathmandu": 15}  # local midnight is at 18:30 / 18:15 UTC


def base(roles: Roles) -> str:
    return f"http://127.0.0.1:{roles.http.http_port}"


@contextlib.asynccontextmanager
async def processes(stack: Roles, log: Path) -> AsyncIterator[list[subprocess.Popen[bytes]]]:
    """The HTTP server and one projector, as processes; SIGKILLed with their sessions at the end."""
    await make_stream(stack.admin)
    server = spawn(["-m", "server"], settings_env(stack.http), log)
    projector = spawn(["-m", "projector", "run"], settings_env(stack.projector), log)
    started = [server, projector]
    try:
        await asyncio.to_thread(wait_ready, base(stack), server, 60)
        yield started
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.terminate()
        for proc in started:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def known_events(now_ms: int, n: int = 900) -> list[tuple[int, str, str]]:
    """Fixed events over 30 closed hours that cross a UTC day boundary; users repeat across hours.
    The span starts at 18:00 UTC, so it holds two Kolkata and two Kathmandu local midnights."""
    start = (now_ms // DAY_MS - 2) * DAY_MS - 6 * HOUR_MS
    return [
        (
            start + (i % 30) * HOUR_MS + (i * 7919) % HOUR_MS,
            f"user-{(i * 31) % 377}",
            "click" if (i // 30) % 3 == 0 else "impression",
        )
        for i in range(n)
    ] + midnight_events(start)


def midnight_events(start: int) -> list[tuple[int, str, str]]:
    """A minute either side of each Kolkata and Kathmandu local midnight after `start` (18:00 UTC):
    one user on both sides, others on one side, and one user of the bulk as well."""
    out = []
    for day in (0, 1):
        for tz, minute in MIDNIGHT_MINUTE.items():
            at = start + day * DAY_MS + minute * MINUTE_MS
            assert datetime.fromtimestamp(at / 1000, ZoneInfo(tz)).strftime("%H:%M:%S") == "00:00:00"
            z = f"{tz[5:9].lower()}{day}"
            out += [
                (at - MINUTE_MS, f"{z}-ann", "click"),
                (at - MINUTE_MS + 1, f"{z}-bob", "impression"),
                (at + MINUTE_MS, f"{z}-ann", "click"),
                (at + MINUTE_MS + 1, f"{z}-cid", "click"),
                (at + MINUTE_MS + 2, "user-5", "impression"),
            ]
    return out


@dataclass
class Row:
    users: set[str] = field(default_factory=set)
    clicks: int = 0
    impressions: int = 0

    def add(self, user: str, kind: str) -> None:
        self.users.add(user)
        if kind == "click":
            self.clicks += 1
        else:
            self.impressions += 1


def local_truth(events: list[tuple[int, str, str]]) -> dict[str, dict[str, Row]]:
    """Per read of LOCAL_READS, its rows as the workload makes them, by their label (local ISO start)."""
    out: dict[str, dict[str, Row]] = {}
    for tz, granularity in LOCAL_READS:
        rows: dict[str, Row] = defaultdict(Row)
        for ts, user, kind in events:
            local = datetime.fromtimestamp(ts / 1000, ZoneInfo(tz)).replace(minute=0, second=0, microsecond=0)
            start = local.replace(hour=0) if granularity == "day" else local
            rows[start.isoformat()].add(user, kind)
        out[f"{tz} {granularity}"] = dict(rows)
    return out


def run(args: list[str], settings: Settings, exit_code: int = 0) -> str:
    done = subprocess.run(
        [sys.executable, *args], env=settings_env(settings), cwd=ROOT,
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == exit_code, (args, done.stdout, done.stderr)
    return done.stdout + done.stderr


async def answers(http: httpx.AsyncClient, truth: Truth) -> dict[str, str]:
    """Every hour's GET, and the whole span as a range by hour and by day, and as LOCAL_READS (each a
    200; those in JSON)."""
    out = {}
    for hour in truth.hours():
        response = await http.get("/analytics", params={"timestamp": hour * HOUR_MS})
        assert response.status_code == 200, response.text
        out[hour_token(hour)] = response.text
    first, last = truth.hours()[0] * HOUR_MS, (truth.hours()[-1] + 1) * HOUR_MS
    for granularity in ("hour", "day"):
        query = urlencode({"from": first, "to": last, "granularity": granularity})
        response = await http.get(f"/analytics/range?{query}")
        assert response.status_code == 200, response.text
        out[granularity] = response.text
    for tz, granularity in LOCAL_READS:
        query = urlencode({"from": first, "to": last, "granularity": granularity, "tz": tz})
        response = await http.get(f"/analytics/range?{query}", headers={"Accept": "application/json"})
        assert response.status_code == 200, response.text
        out[f"{tz} {granularity}"] = response.text
    span = urlencode({"from": hot_tail(truth)[0] * HOUR_MS, "to": (hot_tail(truth)[-1] + 1) * HOUR_MS})
    for name, query in (("by campaign", "by=campaign"), ("by creative in c1", "by=creative&campaign=c1")):
        response = await http.get(f"/analytics/breakdown?{query}&{span}&top=1000")
        assert response.status_code == 200, response.text
        out[name] = response.text
    return out


def hot_tail(truth: Truth) -> list[int]:
    """The hours the breakdowns read: the last five, hot even when the older ones are cold."""
    return truth.hours()[-5:]


def exact(
    truth: Truth, local: dict[str, dict[str, Row]], got: dict[str, str], by: dict[str, dict[str, Row]]
) -> bool:
    """Clicks and impressions of every hour, of every local row and total, and of every breakdown row
    as sent (unique users are compared between stacks, and with `uniques_within_bound`)."""
    if any(parse_text(got[hour_token(h)])[1:] != truth.text(h)[1:] for h in truth.hours()):
        return False
    for name, rows in by.items():
        lines = [line.split(",") for line in got[name].splitlines()[1:]]
        counted = {
            value: (int(c), int(i)) for value, _, c, i, _ in lines if value not in ("(other)", "total")
        }
        if {k: v for k, v in counted.items() if v != (0, 0)} != {
            value: (row.clicks, row.impressions) for value, row in rows.items()
        }:
            return False
    for name, rows in local.items():
        answer = json.loads(got[name])
        counted = {b["start"]: (b["clicks"], b["impressions"]) for b in answer["buckets"]}
        if {k: v for k, v in counted.items() if v != (0, 0)} != {
            label: (row.clicks, row.impressions) for label, row in rows.items()
        }:
            return False
        total = answer["total"]
        if (total["clicks"], total["impressions"]) != (
            sum(r.clicks for r in rows.values()),
            sum(r.impressions for r in rows.values()),
        ):
            return False
    return True


def near(got: int, want: int) -> bool:
    """Within HyperLogLog's bound, as tests/integration/workload.stored_matches allows."""
    return abs(got - want) <= max(1, want * 0.03)


def assert_uniques_within_bound(local: dict[str, dict[str, Row]], got: dict[str, str]) -> None:
    for name, rows in local.items():
        answer = json.loads(got[name])
        for bucket in answer["buckets"]:
            want = len(rows[bucket["start"]].users) if bucket["start"] in rows else 0
            assert near(bucket["unique_users"], want), (name, bucket, want)
        union = set().union(*(row.users for row in rows.values()))
        assert near(answer["total"]["unique_users"], len(union)), (name, answer["total"], len(union))


def dims_of(i: int) -> dict[str, str]:
    """The dimensions of the i-th event: one campaign of five, a creative of it for most, a site for
    some, none at all for a few."""
    if i % 11 == 0:
        return {}
    campaign = f"c{i % 5}"
    dims = {"campaign": campaign}
    if i % 4:
        dims["creative"] = f"{campaign}-k{i % 3}"
    if i % 6 == 0:
        dims["site"] = "s.example"
    return dims


def breakdown_truth(events: list[tuple[int, str, str]], hours: list[int]) -> dict[str, dict[str, Row]]:
    """The campaign rows, and the creative rows of c1, of the events in `hours` (the axes' truth)."""
    out: dict[str, dict[str, Row]] = {"by campaign": defaultdict(Row), "by creative in c1": defaultdict(Row)}
    for i, (ts, user, kind) in enumerate(events):
        if hour_of(ts) in hours:
            dims = dims_of(i)
            out["by campaign"][dims.get("campaign", "(none)")].add(user, kind)
            if dims.get("campaign") == "c1":
                out["by creative in c1"][dims.get("creative", "(none)")].add(user, kind)
    return out


async def post_all(http: httpx.AsyncClient, events: list[tuple[int, str, str]]) -> None:
    async def one(i: int, event: tuple[int, str, str]) -> None:
        extra = "".join(f"&{k}={v}" for k, v in dims_of(i).items())
        response = await http.post(post_path(*event) + extra, headers={"Idempotency-Key": f"eq-{i}"})
        assert response.status_code == 204, response.text

    for start in range(0, len(events), 50):
        await asyncio.gather(*(one(i, e) for i, e in enumerate(events[start : start + 50], start)))


async def answers_through(
    stack: Roles, log: Path, events: list[tuple[int, str, str]], damage_one: bool = False
) -> list[dict[str, str]]:
    """The answers once projected, after `replay`, and after a replay of the busiest hour alone."""
    truth, local = Truth(), local_truth(events)
    for event in events:
        truth.add(*event)
    by = breakdown_truth(events, hot_tail(truth))
    seen = []
    async with processes(stack, log), httpx.AsyncClient(base_url=base(stack), timeout=10) as http:
        await post_all(http, events)
        if stack.admin.hot_hours:  # the older hours leave Redis once snapshotted, the first midnights' too
            first = truth.hours()[0]
            await eventually(
                lambda: cold_partitions(stack.admin, first), lambda n: n == stack.admin.partitions, 60
            )
        seen.append(await eventually(lambda: answers(http, truth), lambda a: exact(truth, local, a, by), 60))
        assert_uniques_within_bound(local, seen[0])
        await asyncio.to_thread(run, ["-m", "projector", "replay"], stack.projector)
        seen.append(await eventually(lambda: answers(http, truth), lambda a: a == seen[0], 30))
        assert await generations(stack.admin) == {2}  # the replaced one is gone from every shard
        busiest = max(truth.hours(), key=lambda h: sum(truth.text(h)[1:]))
        assert busiest == truth.hours()[0]  # with a Kolkata and a Kathmandu midnight; cold if any is
        await asyncio.to_thread(run, ["-m", "projector", "replay", hour_token(busiest)], stack.projector)
        seen.append(await eventually(lambda: answers(http, truth), lambda a: a == seen[0], 30))
        audited = await asyncio.to_thread(
            run, ["-m", "projector", "audit", hour_token(busiest)], stack.projector
        )
        assert "1 hour(s) audited, 0 mismatched" in audited, audited
        if not damage_one:
            return seen
        # A damaged hour (one partition's counts and users, on whichever shard holds them) is found by
        # the audit, named, and repaired by it: the answers are the first ones again.
        damaged = truth.hours()[-1]
        await damage(
            stack.admin,
            damaged,
            partition_of(next(u for t, u, _ in events if hour_of(t) == damaged), stack.admin.partitions),
        )
        token = hour_token(damaged)
        found = await asyncio.to_thread(run, ["-m", "projector", "audit", token], stack.projector, 1)
        assert "1 hour(s) audited, 1 mismatched" in found, found
        assert "clicks" in found, found
        await asyncio.to_thread(run, ["-m", "projector", "audit", token, "--repair"], stack.projector)
        audited = await asyncio.to_thread(run, ["-m", "projector", "audit", token], stack.projector)
        assert "1 hour(s) audited, 0 mismatched" in audited, audited
        seen.append(await eventually(lambda: answers(http, truth), lambda a: a == seen[0], 30))
    return seen


async def damage(settings: Settings, hour: int, partition: int) -> None:
    """Seven clicks more and an intruder among the users of one partition's cell of the hour."""
    keys, client = Keys(settings.key_prefix), connect(settings)
    try:
        gen = keys.live_generation(await client.get(keys.generation(partition)))
        cell, layout = Cell.of_hour(gen, partition, hour), CellLayout(keys)
        await client.hincrby(layout.counts(cell), "clicks", 7)
        await client.pfadd(layout.users(cell), "intruder")
    finally:
        await client.aclose()


@pytest.mark.parametrize("cold", [False, True], ids=["all-hours-hot", "older-hours-cold"])
async def test_the_same_events_give_the_same_answers_on_one_node_and_on_a_cluster(
    tmp_path: Path, cold: bool
) -> None:
    """With `cold`, the hot window leaves out the 15 oldest of the 30 hours: they leave Redis once
    snapshotted (checked for the first, which holds a Kolkata and a Kathmandu midnight), and are read
    through the snapshot store on both; day rollups stay in Redis (checked on the cluster)."""
    now = system_now_ms()
    events = known_events(now)
    assert len({hour_of(ts) // 24 for ts, _, _ in events}) == 2  # the day range has two rows
    hot_hours = hour_of(now) - hour_of(min(ts for ts, _, _ in events)) - 14 if cold else 0
    options = {"hot_hours": hot_hours, "snapshot_interval_s": 0.5, "day_zones": DAY_ZONES}
    with running("nats", tmp_path / "nats1") as nats, running("valkey", tmp_path / "valkey") as valkey:
        roles = roles_on(nats, valkey.role_url, **options)
        single = await answers_through(roles, tmp_path / "single.log", events)
    with running("nats", tmp_path / "nats2") as nats, running_cluster(tmp_path / "vc") as cluster:
        assert len(cluster.ports) == 6
        roles = roles_on(nats, cluster.role_url, **options)
        # The audit finding and repairing a damaged hour, on the cluster, once: with every hour hot.
        on_cluster = await answers_through(roles, tmp_path / "cluster.log", events, damage_one=not cold)
        rollups = await day_rollups_in_their_slots(roles.admin, cluster, events)
    assert single[0] == on_cluster[0]
    for after in (*single[1:], *on_cluster[1:]):
        assert after == single[0]
    print(
        f"\n{len(truth_hours(events))} hours, ranges by hour and by day in UTC, Asia/Kolkata, Asia/Kathmandu:"
        f" same answers on one node and on 3+3; {rollups} day rollups on their partitions' primaries"
    )


async def generations(settings: Settings) -> set[int]:
    """The generations any key of a partition still belongs to, over every primary (SCAN on each)."""
    keys, client = Keys(settings.key_prefix), connect(settings)
    found: set[int] = set()
    try:
        for p in range(settings.partitions):
            head = keys.gen_prefix(p)
            async for raw in client.scan_iter(match=f"{head}*", count=1000):
                key = raw.decode() if isinstance(raw, bytes) else str(raw)
                token = key[len(head) :].partition(":")[0]
                if token.isdigit():  # not the generation pointer (`...:gen`)
                    found.add(int(token))
        return found
    finally:
        await client.aclose()


async def cold_partitions(settings: Settings, hour: int) -> int:
    """In how many partitions Redis says `hour` has left it for the snapshot store."""
    keys, client = Keys(settings.key_prefix), connect(settings)
    try:
        found = 0
        for p in range(settings.partitions):
            gen = keys.live_generation(await client.get(keys.generation(p)))
            found += int(await client.hexists(keys.cold(gen, p), hour_token(hour)))
        return found
    finally:
        await client.aclose()


def truth_hours(events: list[tuple[int, str, str]]) -> set[int]:
    return {hour_of(ts) for ts, _, _ in events}


async def day_rollups_in_their_slots(
    settings: Settings, cluster: ValkeyCluster, events: list[tuple[int, str, str]]
) -> int:
    """Every day rollup (UTC's and Kolkata's) the events touch is in its partition's slot: exactly one
    node, a primary, holds it (every other answers MOVED), with the partition's clicks and impressions
    of that day exactly and its users within HyperLogLog's bound. Returns how many were checked."""
    keys = Keys(settings.key_prefix)
    want: dict[tuple[int, str], Row] = defaultdict(Row)
    for ts, user, kind in events:
        for phase in settings.day_phases:
            want[partition_of(user, settings.partitions), day_token(day_start(ts, phase))].add(user, kind)
    assert settings.day_phases == (0, 18 * 60 + 30)
    nodes = [node_client(settings, node) for node in settings.redis_nodes()]
    assert len(nodes) == len(cluster.ports)
    client = connect(settings)
    try:
        for (p, token), row in sorted(want.items()):
            gen = keys.live_generation(await client.get(keys.generation(p)))
            assert parse_phases(await client.get(keys.phases(gen, p))) == settings.day_phases
            counts, users = (
                CellLayout(keys).counts(Cell(gen, p, token)),
                CellLayout(keys).users(Cell(gen, p, token)),
            )
            assert key_slot(counts) == key_slot(users) == partition_slot(p)
            holders = []
            for node in nodes:
                with contextlib.suppress(MovedError):
                    holders.append((await node.exists(counts, users), node))
            assert [found for found, _ in holders] == [2], (p, token, holders)
            owner = holders[0][1]
            assert (await owner.role())[0] in (b"master", "master")
            stored = await owner.hgetall(counts)
            got = (int(stored.get(b"clicks", 0)), int(stored.get(b"impressions", 0)))
            assert got == (row.clicks, row.impressions), (p, token, got, row)
            assert near(await owner.pfcount(users), len(row.users)), (p, token)
        # A whole Kolkata day is read from its rollups (no hour, cold or not): one changed changes it.
        day = day_start(min(ts for ts, _, _ in events), settings.day_phases[1]) + DAY_MS
        reader = Reader(client, keys, settings.partitions, split_by_partition=True)
        (before,), _ = await reader.spans([(day, day + DAY_MS)])
        assert before.clicks == sum(r.clicks for (_, t), r in want.items() if t == day_token(day))
        gen = keys.live_generation(await client.get(keys.generation(0)))
        await client.hincrby(CellLayout(keys).counts(Cell(gen, 0, day_token(day))), "clicks", 1000)
        (after,), _ = await reader.spans([(day, day + DAY_MS)])
        assert after.clicks == before.clicks + 1000
        return len(want)
    finally:
        await client.aclose()
        for node in nodes:
            await node.aclose()
