"""The whole stack as processes (HTTP server, projector, replay, audit) on a single Valkey and on a
Valkey cluster of 3 primaries with replicas: the same events give the same answers, every hour, a
range by hour and by day, after a full replay and after a single hour's replay."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from contract.hours import HOUR_MS, hour_of, hour_token, system_now_ms
from contract.keys import Keys
from contract.projections_client import connect
from contract.settings import Settings
from deploy.servers import ROOT
from tests.conftest import running
from tests.helpers import eventually, settings_env
from tests.integration.conftest import Roles, make_stream, roles_on, spawn, wait_ready
from tests.integration.valkey_cluster import running_cluster
from tests.integration.workload import Truth, parse_text, post_path

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

DAY_MS = 24 * HOUR_MS


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
    """Fixed events over 30 closed hours that cross a UTC day boundary; users repeat across hours."""
    start = (now_ms // DAY_MS - 2) * DAY_MS - 6 * HOUR_MS
    return [
        (
            start + (i % 30) * HOUR_MS + (i * 7919) % HOUR_MS,
            f"user-{(i * 31) % 377}",
            "click" if (i // 30) % 3 == 0 else "impression",
        )
        for i in range(n)
    ]


def run(args: list[str], settings: Settings) -> str:
    done = subprocess.run(
        [sys.executable, *args], env=settings_env(settings), cwd=ROOT,
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout + done.stderr


async def answers(http: httpx.AsyncClient, truth: Truth) -> dict[str, str]:
    """Every hour's GET, and the whole span as a range by hour and by day (each a 200)."""
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
    return out


def exact(truth: Truth, got: dict[str, str]) -> bool:
    """Clicks and impressions of every hour as sent (unique users are compared between stacks)."""
    return all(parse_text(got[hour_token(h)])[1:] == truth.text(h)[1:] for h in truth.hours())


async def post_all(http: httpx.AsyncClient, events: list[tuple[int, str, str]]) -> None:
    async def one(i: int, event: tuple[int, str, str]) -> None:
        response = await http.post(post_path(*event), headers={"Idempotency-Key": f"eq-{i}"})
        assert response.status_code == 204, response.text

    for start in range(0, len(events), 50):
        await asyncio.gather(*(one(i, e) for i, e in enumerate(events[start : start + 50], start)))


async def answers_through(
    stack: Roles, log: Path, events: list[tuple[int, str, str]]
) -> list[dict[str, str]]:
    """The answers once projected, after `replay`, and after a replay of the busiest hour alone."""
    truth = Truth()
    for event in events:
        truth.add(*event)
    seen = []
    async with processes(stack, log), httpx.AsyncClient(base_url=base(stack), timeout=10) as http:
        await post_all(http, events)
        if stack.admin.hot_hours:  # the older hours leave Redis once snapshotted
            await eventually(lambda: cold_hours(stack.admin), lambda n: n > 0, 60)
        seen.append(await eventually(lambda: answers(http, truth), lambda a: exact(truth, a), 60))
        await asyncio.to_thread(run, ["-m", "projector", "replay"], stack.projector)
        seen.append(await eventually(lambda: answers(http, truth), lambda a: a == seen[0], 30))
        assert await generations(stack.admin) == {2}  # the replaced one is gone from every shard
        busiest = max(truth.hours(), key=lambda h: sum(truth.text(h)[1:]))
        await asyncio.to_thread(run, ["-m", "projector", "replay", hour_token(busiest)], stack.projector)
        seen.append(await eventually(lambda: answers(http, truth), lambda a: a == seen[0], 30))
        audited = await asyncio.to_thread(
            run, ["-m", "projector", "audit", hour_token(busiest)], stack.projector
        )
        assert "1 hour(s) audited, 0 mismatched" in audited, audited
    return seen


@pytest.mark.parametrize("cold", [False, True], ids=["all-hours-hot", "older-hours-cold"])
async def test_the_same_events_give_the_same_answers_on_one_node_and_on_a_cluster(
    tmp_path: Path, cold: bool
) -> None:
    """With `cold`, the hot window leaves out the 15 oldest of the 30 hours: they leave Redis once
    snapshotted (checked), and are read through the snapshot store on both."""
    now = system_now_ms()
    events = known_events(now)
    assert len({hour_of(ts) // 24 for ts, _, _ in events}) == 2  # the day range has two rows
    hot_hours = hour_of(now) - hour_of(min(ts for ts, _, _ in events)) - 14 if cold else 0
    options = {"hot_hours": hot_hours, "snapshot_interval_s": 0.5}
    with running("nats", tmp_path / "nats1") as nats, running("valkey", tmp_path / "valkey") as valkey:
        roles = roles_on(nats, valkey.role_url, **options)
        single = await answers_through(roles, tmp_path / "single.log", events)
    with running("nats", tmp_path / "nats2") as nats, running_cluster(tmp_path / "vc") as cluster:
        assert len(cluster.ports) == 6
        roles = roles_on(nats, cluster.role_url, **options)
        on_cluster = await answers_through(roles, tmp_path / "cluster.log", events)
    assert single[0] == on_cluster[0]
    for after in (*single[1:], *on_cluster[1:]):
        assert after == single[0]
    print(f"\n{len(single[0]) - 2} hours, ranges by hour and by day: same answers on one node and on 3+3")


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


async def cold_hours(settings: Settings) -> int:
    """How many (hour, partition) cells Redis says have left it for the snapshot store."""
    keys, client = Keys(settings.key_prefix), connect(settings)
    try:
        found = 0
        for p in range(settings.partitions):
            gen = keys.live_generation(await client.get(keys.generation(p)))
            found += int(await client.hlen(keys.cold(gen, p)))
        return found
    finally:
        await client.aclose()
