"""The audit against real servers: a clean log audits clean (duplicate keys, late events), a closed
hour corrupted behind the projector's back (a counter, a HyperLogLog, a missing key, a lost dedup
entry) is named exactly, `python -m projector audit` exits 1 naming it, and `--repair` makes it exact."""

from __future__ import annotations

import subprocess
import sys

import httpx
from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from contract.cells import Cell, CellLayout
from contract.hours import HOUR_MS, hour_token, partition_of
from contract.keys import Keys
from deploy.servers import ROOT
from deploy.settings import Settings
from projector.audit.auditor import Auditor, hours_in_log
from projector.audit.verdict import Verdict
from tests.helpers import eventually, settings_env

BASE = 490_000  # a fixed closed hour in 2025
HOURS = [BASE + i for i in range(6)]
USERS = [f"u{i}" for i in range(40)]


async def post(http: httpx.AsyncClient, hour: int, user: str, kind: str, key: str | None = None) -> None:
    headers = {"Idempotency-Key": key} if key else {}
    response = await http.post(
        f"/analytics?timestamp={hour * HOUR_MS + 7}&user={user}&{kind}", headers=headers
    )
    assert response.status_code == 204, response.text


async def write_hours(http: httpx.AsyncClient, per_hour_keys: bool) -> None:
    """Per user and hour a click and a keyed impression sent twice; with `per_hour_keys` off a user's
    key is the same in every hour, so live refuses it after its first hour (within the window)."""
    for n, hour in enumerate(HOURS):
        for user in USERS[: 10 + 5 * n]:
            key = f"k-{user}-{hour}" if per_hour_keys else f"k-{user}"
            await post(http, hour, user, "click")
            await post(http, hour, user, "impression", key=key)
            await post(http, hour, user, "impression", key=key)  # a retry: counts once
    await post(http, HOURS[0], "late-comer", "click")  # late: after every later hour


def run_audit(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "projector", "audit", *args],
        cwd=ROOT,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_a_clean_log_audits_clean_with_keys_reused_across_hours_and_late_events(
    settings: Settings, nc: NATS, redis: Redis, client: httpx.AsyncClient, projector: None
) -> None:
    await write_hours(client, per_hour_keys=False)
    auditor = await Auditor.open(settings, nc, redis)
    assert await hours_in_log(nc, settings) == HOURS

    async def audit_all() -> dict[int, Verdict]:
        return {h: (await auditor.hour(h)).verdict for h in HOURS}

    assert await eventually(audit_all, lambda v: set(v.values()) == {Verdict.OK}) == dict.fromkeys(
        HOURS, Verdict.OK
    )
    first = await auditor.hour(HOURS[0])
    assert first.totals("log") == (11, 10, 11)
    assert first.totals("served") == (11, 10, 11)
    assert (await auditor.hour(HOURS[1])).totals("served") == (15, 5, 15)  # the reused keys refused
    done = run_audit(settings)
    assert done.returncode == 0, done.stdout + done.stderr


async def test_corrupted_hours_are_named_exactly_and_repaired(
    settings: Settings, nc: NATS, redis: Redis, client: httpx.AsyncClient, projector: None
) -> None:
    await write_hours(client, per_hour_keys=True)
    auditor = await Auditor.open(settings, nc, redis)

    async def audit_all() -> dict[int, Verdict]:
        return {h: (await auditor.hour(h)).verdict for h in HOURS}

    assert await eventually(audit_all, lambda v: set(v.values()) == {Verdict.OK}) == dict.fromkeys(
        HOURS, Verdict.OK
    )

    keys, gen = Keys(settings.key_prefix), 1
    part = partition_of("u1", settings.partitions)
    await redis.hincrby(CellLayout(keys).counts(Cell.of_hour(gen, part, HOURS[1])), "clicks", 1)
    await redis.pfadd(CellLayout(keys).users(Cell.of_hour(gen, part, HOURS[2])), "intruder")
    await redis.delete(CellLayout(keys).counts(Cell.of_hour(gen, part, HOURS[4])))

    found = {h: await auditor.hour(h) for h in HOURS}
    bad = {h for h, a in found.items() if a.verdict is Verdict.MISMATCH}
    assert bad == {HOURS[1], HOURS[2], HOURS[4]}
    log_clicks = found[HOURS[1]].parts[part].log.clicks
    assert found[HOURS[1]].differs == (f"p{part} clicks: log {log_clicks}, served {log_clicks + 1}",)
    assert found[HOURS[2]].differs[0].startswith(f"p{part} uniques: ")
    assert {d.split(":")[0] for d in found[HOURS[4]].differs} == {f"p{part} clicks", f"p{part} impressions"}

    done = run_audit(settings)
    assert done.returncode == 1, done.stdout + done.stderr
    named = {line.split()[0] for line in done.stdout.splitlines() if line.endswith("mismatch")}
    # The UTC day rollup holding those hours no longer equals its components (hours of its partition).
    assert named == {hour_token(h) for h in (HOURS[1], HOURS[2], HOURS[4])} | {"d202511240000"}, done.stdout

    one = run_audit(settings, hour_token(HOURS[0]), hour_token(HOURS[3]))
    assert "2 hour(s) audited, 0 mismatched" in one.stdout, one.stdout + one.stderr
    # Sound hours, but the day rollup holding them also holds the corrupted ones.
    assert one.returncode == 1, one.stdout + one.stderr
    assert "1 day rollup(s) audited, 1 mismatched" in one.stdout, one.stdout

    fixed = run_audit(settings, "--since", "2025-11-23T00:00Z", "--repair")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert fixed.stdout.count("rebuilt from") == 3, fixed.stdout
    assert set((await audit_all()).values()) == {Verdict.OK}
    again = run_audit(settings)
    assert again.returncode == 0, again.stdout
    assert "6 hour(s) audited, 0 mismatched" in again.stdout, again.stdout


async def test_a_lost_dedup_entry_shows_as_a_mismatch_in_the_hour_its_retry_landed_in(
    settings: Settings, nc: NATS, redis: Redis, client: httpx.AsyncClient, projector: None
) -> None:
    """Dedup entries only decide later events: lost, the next retry of their key counts again, and the
    audit, which folds the log with the dedup the apply should have done, names that hour."""
    hour, user = HOURS[3], "u7"
    await post(client, hour, user, "impression", key="order-1")
    await post(client, HOURS[5], "marker", "click")
    auditor = await Auditor.open(settings, nc, redis)

    async def verdicts() -> dict[int, Verdict]:
        return {h: (await auditor.hour(h)).verdict for h in (hour, HOURS[5])}

    await eventually(verdicts, lambda v: set(v.values()) == {Verdict.OK})

    keys, gen = Keys(settings.key_prefix), 1
    assert await redis.delete(keys.dedup(gen, partition_of(user, settings.partitions))) == 1
    await post(client, hour, user, "impression", key="order-1")  # the retry the lost entry lets through
    found = await eventually(lambda: auditor.hour(hour), lambda a: a.verdict is Verdict.MISMATCH)
    assert found.totals("log") == (0, 1, 1)
    assert found.totals("served") == (0, 2, 1)
    assert (await auditor.hour(HOURS[5])).verdict is Verdict.OK

    done = run_audit(settings, hour_token(hour), hour_token(HOURS[5]))
    assert done.returncode == 1, done.stdout + done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines() if line.endswith("mismatch")] == [
        hour_token(hour)
    ]
    fixed = run_audit(settings, hour_token(hour), "--repair")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert (await auditor.hour(hour)).totals("served") == (0, 1, 1)
