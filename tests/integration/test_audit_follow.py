"""The continuous audit against real servers: a closed hour corrupted before it is due is reported
(exactly that hour, a WARNING with both values, its metric) within one interval of becoming due, its
results land under the audit's keys only; and compaction keeps every event the audit has not covered."""

from __future__ import annotations

import asyncio
import functools
import logging
import subprocess
import sys

import httpx
import pytest
from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from contract.buckets import day_tokens
from contract.cells import Cell, CellLayout
from contract.hours import HOUR_MS, hour_of, hour_token, partition_of, system_now_ms
from contract.keys import Keys
from deploy.servers import ROOT
from deploy.settings import Settings
from projector.audit.follow import Follower
from projector.audit.records import Records
from projector.log.compaction import Compacted, compact
from projector.projections.snapshots import open_snapshots
from tests.conftest import Server
from tests.helpers import eventually, isolated_settings, metric, settings_env

BASE = 490_100
HOURS = [BASE + i for i in range(4)]


@pytest.fixture
def settings(nats_server: Server, redis_server: Server) -> Settings:
    return isolated_settings(
        nats_server.url,
        redis_server.url,
        audit_enabled=True,
        audit_grace_s=60,
        audit_interval_s=0.2,
        audit_cpu_share=1.0,
        log_keep_s=1,
        snapshot_interval_s=1,
    )


async def write(http: httpx.AsyncClient, hours: list[int]) -> None:
    for hour in hours:
        for i in range(12):
            r = await http.post(f"/analytics?timestamp={hour * HOUR_MS + i}&user=u{i}&click")
            assert r.status_code == 204


async def test_a_corrupted_hour_is_reported_within_one_interval_of_becoming_due(
    settings: Settings,
    nc: NATS,
    redis: Redis,
    client: httpx.AsyncClient,
    projector: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await write(client, HOURS)
    keys = Keys(settings.key_prefix)
    # Applied: every hour's clicks are in Redis (the audit would say PENDING otherwise, not mismatch).
    total = functools.partial(_clicks, redis, keys, settings)
    await eventually(total, lambda n: n == 12 * len(HOURS))
    part = partition_of("u3", settings.partitions)
    await redis.hincrby(CellLayout(keys).counts(Cell.of_hour(1, part, HOURS[2])), "clicks", 5)

    # The clock says the first two hours are due, the last two not yet.
    now = {"ms": (HOURS[2] + 1) * HOUR_MS + 61_000 - HOUR_MS}
    follower = Follower(settings, nc, redis, clock=lambda: now["ms"])
    stop = asyncio.Event()
    mismatches = metric("hourglass_audit_mismatches_total")
    records = Records(redis, keys)
    with caplog.at_level(logging.INFO, logger="audit"):
        task = asyncio.create_task(follower.run(stop))
        try:
            await eventually(records.through, lambda t: t == HOURS[2] - 1)
            assert await records.verdict(HOURS[2]) is None
            assert metric("hourglass_audit_mismatches_total") == mismatches
            now["ms"] += 2 * HOUR_MS  # every hour is due now
            await eventually(records.through, lambda t: t is not None and t >= HOURS[3], timeout=2.0)
        finally:
            stop.set()
            await task
    verdicts = {h: await records.verdict(h) for h in HOURS}
    assert verdicts == {HOURS[0]: "ok", HOURS[1]: "ok", HOURS[2]: "mismatch", HOURS[3]: "ok"}
    assert metric("hourglass_audit_mismatches_total") == mismatches + 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    warned = [w for w in warnings if w.startswith("audit: hour ")]
    assert len(warned) == 1
    assert hour_token(HOURS[2]) in warned[0]
    assert f"p{part} clicks: log" in warned[0]
    assert ", served " in warned[0]
    # The UTC day rollup holding the hour no longer equals its components: warned about once, recorded.
    (day,) = day_tokens(HOURS[2], 0, (0,))
    others = [w for w in warnings if w not in warned]
    assert len(others) == 1, others
    assert others[0].startswith(f"audit: day rollup {day} differs from its components: {day}  rollup ")
    assert set(await redis.zrange(keys.audit_mismatches, 0, -1)) == {
        hour_token(HOURS[2]).encode(),
        day.encode(),
    }
    assert (await redis.hget(keys.audit_last, "hour")) is not None
    # A second process finds nothing left to do: each hour is audited once.
    assert await Follower(settings, nc, redis, clock=lambda: now["ms"]).pass_once() == []
    # A late event for an audited hour: once applied, the hour is audited again (and still exact).
    await write(client, [HOURS[0]])
    late = Follower(settings, nc, redis, clock=lambda: now["ms"])

    async def again() -> list[tuple[int, str]]:
        return [(a.hour, a.verdict.value) for a in await late.pass_once()]

    assert await eventually(again, lambda found: found == [(HOURS[0], "ok")]) == [(HOURS[0], "ok")]
    # ./just inspect shows the last results.
    shown = subprocess.run(
        [sys.executable, "-m", "projector", "inspect", "--last", "0"],
        env=settings_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    audit = shown.stdout.split("\naudit:\n", 1)[1]
    assert f"MISMATCH {hour_token(HOURS[2])}  log clicks=12" in audit, audit
    assert "audited through hour " in audit
    assert "(none yet)" not in audit


async def _clicks(redis: Redis, keys: Keys, settings: Settings) -> int:
    total = 0
    for hour in HOURS:
        for p in range(settings.partitions):
            total += int(await redis.hget(CellLayout(keys).counts(Cell.of_hour(1, p, hour)), "clicks") or 0)
    return total


async def test_compaction_keeps_every_event_the_audit_has_not_covered(
    settings: Settings, nc: NATS, redis: Redis, client: httpx.AsyncClient, projector: None
) -> None:
    await write(client, HOURS)
    js = nc.jetstream()
    last = (await js.stream_info(settings.stream_name)).state.last_seq
    snapshots = await eventually(lambda: open_snapshots(nc, redis, settings), lambda s: s is not None)
    assert snapshots is not None

    async def covered() -> int:
        marks = [await snapshots.manifest(p) for p in range(settings.partitions)]
        return min((m.watermark if m else 0) for m, _ in marks)

    await eventually(covered, lambda c: c >= last - 3 * settings.partitions, timeout=30)
    later = system_now_ms() + 5_000  # past the keep period
    records = Records(redis, Keys(settings.key_prefix))

    async def compacted() -> Compacted | None:
        """What the live projector does, told what the audit's records say."""
        covered = await snapshots.covered(settings.partitions)
        return await compact(nc, settings, covered, later, records.through)

    # Nothing audited: nothing goes. Audited through an hour long past: events stored now may still
    # hold later hours (up to a day ahead), so nothing goes either.
    assert await compacted() is None
    await records.raise_through(hour_of(system_now_ms()) - 30)
    assert await compacted() is None
    assert (await js.stream_info(settings.stream_name)).state.first_seq == 1
    # Audited through a day ahead of now: compaction goes as far as the snapshots allow.
    await records.raise_through(hour_of(system_now_ms()) + 25)

    # (The live projector compacts too: whichever of us gets there first.)
    async def first_seq() -> int:
        await compacted()
        return (await js.stream_info(settings.stream_name)).state.first_seq

    assert await eventually(first_seq, lambda f: f > 1) > 1


async def test_two_audit_processes_split_the_hours_and_audit_each_once(
    settings: Settings, nc: NATS, redis: Redis, client: httpx.AsyncClient, projector: None
) -> None:
    await write(client, HOURS)
    keys = Keys(settings.key_prefix)
    await eventually(functools.partial(_clicks, redis, keys, settings), lambda n: n == 12 * len(HOURS))
    later = (HOURS[-1] + 3) * HOUR_MS  # every hour closed for longer than the grace period
    followers = [Follower(settings, nc, redis, clock=lambda: later) for _ in range(2)]
    passes = await asyncio.gather(*(f.pass_once() for f in followers))
    audited = [a.hour for found in passes for a in found]
    assert sorted(audited) == HOURS, "each hour audited by exactly one of the two"
    assert await Records(redis, keys).through() == HOURS[-1] + 1  # up to the first hour not yet due
    assert [a.hour for f in followers for a in await f.pass_once()] == [], "nothing left to audit"
