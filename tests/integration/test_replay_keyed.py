"""A single-hour replay (and `audit --repair`, which runs one) decides the hour's Idempotency-Keys as live
did: a key its user already sent in another hour within the window, before or in between the hour's
own messages, is refused again, so the hour, its quarter-hours and its day rollups stay exact, and
the live dedup entries still refuse later retries."""

from __future__ import annotations

import httpx
from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from contract.buckets import QUARTER_MS, QUARTERS_PER_HOUR, day_tokens, parse_phases, quarter_token
from contract.cells import Cell, CellLayout
from contract.hours import HOUR_MS, hour_token, partition_of
from contract.keys import Keys
from deploy.settings import Settings
from projector.audit.auditor import Auditor
from projector.audit.verdict import Verdict
from projector.replay.single_hour import replay_hour
from tests.helpers import eventually
from tests.integration.cells import Raw, expected, stored
from tests.integration.test_audit import run_audit

A = 490_100  # two fixed closed hours in 2025, and a third for markers
B = A + 1
C = A + 2
USERS = [f"u{i}" for i in range(12)]


def at(hour: int, quarter: int) -> int:
    return hour * HOUR_MS + quarter * QUARTER_MS + 7


async def post(http: httpx.AsyncClient, ts: int, user: str, kind: str, key: str | None = None) -> None:
    headers = {"Idempotency-Key": key} if key else {}
    response = await http.post(f"/analytics?timestamp={ts}&user={user}&{kind}", headers=headers)
    assert response.status_code == 204, response.text


async def write(http: httpx.AsyncClient) -> list[Raw]:
    """Per user: a click in B, its key first sent in A (late, once B has begun), then retried in B (a
    quarter per user) and again in B; a keyed click sent only in B, twice. What live counts, returned."""
    counted: list[Raw] = []
    for n, user in enumerate(USERS):
        quarter = n % QUARTERS_PER_HOUR
        kind = "click" if n % 3 == 0 else "impression"
        await post(http, at(B, quarter), user, "click")
        await post(http, at(A, quarter), user, kind, key=f"order-{user}")  # counts, in A
        await post(http, at(B, quarter), user, kind, key=f"order-{user}")  # the retry: refused
        await post(http, at(B, 3 - quarter), user, "click", key=f"own-{user}")  # counts, in B
        await post(http, at(B, 3 - quarter), user, "click", key=f"own-{user}")  # refused
        counted += [
            (at(B, quarter), user, "click"),
            (at(A, quarter), user, kind),
            (at(B, 3 - quarter), user, "click"),
        ]
    return counted


async def marked(
    http: httpx.AsyncClient, redis: Redis, settings: Settings, counted: list[Raw], user: str
) -> None:
    """Post a click of `user` in hour C and wait until its partition applied it (and all before it)."""
    await post(http, at(C, 0), user, "click")
    counted.append((at(C, 0), user, "click"))
    keys, p = Keys(settings.key_prefix), partition_of(user, settings.partitions)
    n = expected(counted, hour_token(C), p, settings.partitions)[1]
    await eventually(lambda: stored(redis, keys, 1, hour_token(C), p), lambda cell: cell[1] >= n)


async def assert_exact(redis: Redis, settings: Settings, counted: list[Raw]) -> None:
    """Hours A and B, B's quarter-hours and every day rollup holding them, in every partition."""
    keys = Keys(settings.key_prefix)
    for p in range(settings.partitions):
        phases = parse_phases(await redis.get(keys.phases(1, p)))
        assert phases, "the live generation keeps day rollups"
        days = {d for h in (A, B) for q in range(QUARTERS_PER_HOUR) for d in day_tokens(h, q, phases)}
        quarters = [quarter_token(B, q) for q in range(QUARTERS_PER_HOUR)]
        for token in (hour_token(A), hour_token(B), *quarters, *sorted(days)):
            want = expected(counted, token, p, settings.partitions)
            assert await stored(redis, keys, 1, token, p) == want, f"p{p} {token}"


async def test_a_key_sent_in_another_hour_stays_refused_by_a_single_hour_replay_and_a_repair(
    settings: Settings, nc: NATS, redis: Redis, client: httpx.AsyncClient, projector: None
) -> None:
    counted = await write(client)
    for user in USERS:
        await marked(client, redis, settings, counted, user)
    await assert_exact(redis, settings, counted)  # live counted each key once
    auditor = await Auditor.open(settings, nc, redis)
    assert (await auditor.hour(B)).verdict is Verdict.OK

    report = await replay_hour(settings, nc, redis, B)
    assert report.events == 4 * len(USERS)  # B's own events, not those of A that lent their keys
    await assert_exact(redis, settings, counted)
    assert (await auditor.hour(B)).verdict is Verdict.OK

    # The live dedup entries were left alone: a later retry of the key is still refused.
    user = USERS[1]
    await post(client, at(B, 0), user, "impression", key=f"order-{user}")
    await marked(client, redis, settings, counted, user)
    await assert_exact(redis, settings, counted)

    # A damaged hour B is repaired by the audit to the same exact value.
    keys, p = Keys(settings.key_prefix), partition_of(USERS[0], settings.partitions)
    await redis.hincrby(CellLayout(keys).counts(Cell.of_hour(1, p, B)), "impressions", 5)
    assert (await auditor.hour(B)).verdict is Verdict.MISMATCH
    fixed = run_audit(settings, hour_token(B), "--repair")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "rebuilt from" in fixed.stdout, fixed.stdout
    await assert_exact(redis, settings, counted)
    again = run_audit(settings, hour_token(A), hour_token(B))
    assert again.returncode == 0, again.stdout + again.stderr
