"""The audit of quarter-hours and day rollups against real servers: an untouched stack audits clean
(day rollups in UTC and Asia/Kolkata), a damaged quarter-hour is named and `--repair` rebuilds its hour,
a damaged day rollup (a stray user, a counter) is reported and `--repair` rebuilds it exactly."""

from __future__ import annotations

import httpx
import pytest
from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from contract import hll
from contract.buckets import quarter_of, quarter_token
from contract.cells import Cell, CellLayout
from contract.hours import HOUR_MS, hour_token, partition_of
from contract.keys import Keys
from deploy.settings import Settings
from projector.audit.auditor import Auditor
from projector.audit.records import Records, summary
from projector.audit.verdict import Verdict
from tests.conftest import Server
from tests.helpers import eventually, isolated_settings
from tests.integration.test_audit import run_audit

HOURS = [490_001, 490_002, 490_003]  # 17:00 to 20:00 UTC on 2025-11-24: Kolkata's day starts at 18:30
DAYS = ["d202511231830", "d202511240000", "d202511241830"]
USERS = [f"u{i}" for i in range(12)]
MINUTES = [1, 14, 16, 29, 31, 44, 46, 59]  # either side of each quarter-hour's edges


@pytest.fixture
def settings(nats_server: Server, redis_server: Server) -> Settings:
    return isolated_settings(nats_server.url, redis_server.url, day_zones="UTC,Asia/Kolkata")


def stamped() -> list[tuple[int, str, str]]:
    """(timestamp ms, user, kind): users spread over every quarter-hour of the hours."""
    events = []
    for n, hour in enumerate(HOURS):
        for i, minute in enumerate(MINUTES):
            for user in USERS[(n + i) % 5 :: 2]:
                kind = "click" if (i + len(user)) % 3 else "impression"
                events.append((hour * HOUR_MS + minute * 60_000 + i, user, kind))
    return events


async def written(client: httpx.AsyncClient, nc: NATS, redis: Redis, settings: Settings) -> Auditor:
    """The events posted and applied; every hour audits clean."""
    for ts, user, kind in stamped():
        assert (await client.post(f"/analytics?timestamp={ts}&user={user}&{kind}")).status_code == 204
    auditor = await Auditor.open(settings, nc, redis)

    async def verdicts() -> set[Verdict]:
        return {(await auditor.hour(h)).verdict for h in HOURS}

    await eventually(verdicts, lambda v: v == {Verdict.OK}, timeout=30)
    return auditor


async def test_an_untouched_stack_audits_clean_with_quarters_and_day_rollups(
    settings: Settings, nc: NATS, redis: Redis, client: httpx.AsyncClient, projector: None
) -> None:
    auditor = await written(client, nc, redis, settings)
    for hour in HOURS:
        found = await auditor.hour(hour)
        assert found.verdict is Verdict.OK
        assert all(len(p.log.quarters) == len(p.served.quarters) == 4 for p in found.parts)
        assert sum(q.clicks for p in found.parts for q in p.log.quarters) == found.totals("log")[0] > 0
    assert await auditor.days(HOURS) == DAYS
    for token in DAYS:
        day = await auditor.day(token)
        assert day.verdict is Verdict.OK, day.line()
        assert day.totals("rollup") == day.totals("components")
        assert day.totals("rollup")[0] > 0
    done = run_audit(settings)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 hour(s) audited, 0 mismatched" in done.stdout, done.stdout
    assert "3 day rollup(s) audited, 0 mismatched" in done.stdout, done.stdout
    assert {line.split()[0] for line in done.stdout.splitlines() if line.startswith("d")} == set(DAYS)


async def test_a_damaged_quarter_is_named_and_repair_rebuilds_its_hour(
    settings: Settings, nc: NATS, redis: Redis, client: httpx.AsyncClient, projector: None
) -> None:
    auditor = await written(client, nc, redis, settings)
    keys, hour, part = Keys(settings.key_prefix), HOURS[1], partition_of("u1", settings.partitions)
    quarter = quarter_token(hour, 2)
    await redis.hincrby(CellLayout(keys).counts(Cell(1, part, quarter)), "clicks", 1)

    found = await auditor.hour(hour)
    assert found.verdict is Verdict.MISMATCH
    want = found.parts[part].log.quarters[2].clicks
    assert found.differs == (f"p{part} quarter {quarter} clicks: log {want}, served {want + 1}",)
    # The Kolkata day starting at 18:30 has that quarter among its components; the UTC day has whole hours.
    assert [(await auditor.day(t)).verdict for t in DAYS] == [Verdict.OK, Verdict.OK, Verdict.MISMATCH]

    done = run_audit(settings)
    assert done.returncode == 1, done.stdout + done.stderr
    mismatched = [line.split()[0] for line in done.stdout.splitlines() if line.endswith("mismatch")]
    assert mismatched == [hour_token(hour), DAYS[2]], done.stdout
    assert f"quarter {quarter} clicks" in done.stdout

    fixed = run_audit(settings, "--repair")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert fixed.stdout.count("rebuilt from") == 1, fixed.stdout  # the hour's replay rebuilt its days
    assert (await auditor.hour(hour)).verdict is Verdict.OK
    assert [(await auditor.day(t)).verdict for t in DAYS] == [Verdict.OK] * 3
    assert int(await redis.hget(CellLayout(keys).counts(Cell(1, part, quarter)), "clicks") or 0) == want


async def test_a_damaged_day_rollup_is_reported_recorded_and_rebuilt_exactly(
    settings: Settings, nc: NATS, redis: Redis, client: httpx.AsyncClient, projector: None
) -> None:
    auditor = await written(client, nc, redis, settings)
    keys, p0, p1 = Keys(settings.key_prefix), 0, settings.partitions - 1
    kolkata, utc = DAYS[2], DAYS[1]
    before = {(t, p): await stored(redis, keys, t, p) for t in DAYS for p in (p0, p1)}
    assert await redis.pfadd(CellLayout(keys).users(Cell(1, p0, kolkata)), "stray-user") == 1
    await redis.hincrby(CellLayout(keys).counts(Cell(1, p1, utc)), "impressions", 2)

    found = {t: await auditor.day(t) for t in DAYS}
    assert [found[t].verdict for t in DAYS] == [Verdict.OK, Verdict.MISMATCH, Verdict.MISMATCH]
    assert [d.split(":")[0] for d in found[kolkata].differs] == [f"p{p0} {kolkata} uniques"]
    assert found[utc].differs[0].startswith(f"p{p1} {utc} impressions: components ")
    assert {(await auditor.hour(h)).verdict for h in HOURS} == {Verdict.OK}  # the hours are sound

    records = Records(redis, keys)
    for token in DAYS:
        await records.save_day(found[token], 1)
    shown = "\n".join(await summary(redis, keys))
    assert f"MISMATCH {kolkata}  rollup" in shown, shown
    assert f"MISMATCH {utc}  rollup" in shown, shown

    done = run_audit(settings, hour_token(HOURS[2]))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 hour(s) audited, 0 mismatched" in done.stdout, done.stdout
    assert "2 day rollup(s) audited, 2 mismatched" in done.stdout, done.stdout

    fixed = run_audit(settings, "--repair")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert fixed.stdout.count("rebuilt from its components") == 2, fixed.stdout
    assert "rebuilt from " not in fixed.stdout.replace("rebuilt from its components", ""), fixed.stdout
    for (token, p), value in before.items():
        assert await stored(redis, keys, token, p) == value
    assert [(await auditor.day(t)).verdict for t in DAYS] == [Verdict.OK] * 3


async def stored(
    redis: Redis, keys: Keys, token: str, p: int
) -> tuple[bytes, dict[bytes | str, bytes | str]]:
    """A cell's registers (whatever its encoding) and counters."""
    raw = await redis.get(CellLayout(keys).users(Cell(1, p, token)))
    return hll.registers(raw if isinstance(raw, bytes) else b""), await redis.hgetall(
        CellLayout(keys).counts(Cell(1, p, token))
    )


def test_the_events_cover_every_quarter_of_every_hour() -> None:
    assert {(ts // HOUR_MS, quarter_of(ts)) for ts, _, _ in stamped()} == {
        (h, q) for h in HOURS for q in range(4)
    }
