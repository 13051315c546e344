"""The audit's own least-privilege role against real servers configured as `./just up` configures them:
it reads the log, the snapshots and the projections, writes its results under `<prefix>:{audit}:*`, and
cannot write a projection, publish an event or purge the stream."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nats
import nats.errors
import pytest
import redis.exceptions
from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from contract.cells import Cell, CellLayout
from contract.hours import hour_token
from contract.keys import Keys
from contract.schema import Event, Kind, batch_of, encode
from deploy.servers import ROOT
from deploy.settings import Settings
from projector.audit.records import Records
from projector.audit.verdict import HourAudit
from tests.conftest import Server
from tests.helpers import eventually, settings_env
from tests.integration import secured
from tests.integration.secured import connect_as

admin, data_dir, servers = secured.admin, secured.data_dir, secured.servers  # the fixtures, in one place

HOUR = 490_200


async def test_the_audit_reads_the_log_and_redis_under_its_own_role(
    servers: tuple[Server, Server], admin: NATS, data_dir: Path
) -> None:
    settings = Settings()
    events = tuple(Event(HOUR * 3_600_000 + i, "u", Kind.CLICK) for i in range(3))
    subj = f"{settings.subject_prefix}.{hour_token(HOUR)}.2"
    ack = await admin.jetstream().publish(subj, encode(batch_of(events)))
    nats_server, valkey = servers
    # As if p2's projector had applied it and then lost the hour's counts.
    redis_admin = Redis.from_url(valkey.role_url("admin"))
    await redis_admin.set(Keys(settings.key_prefix).watermark(1, 2), ack.seq)
    await redis_admin.aclose()
    env = settings_env(
        Settings(data_dir=data_dir, nats_url=nats_server.anonymous_url, redis_url=valkey.anonymous_url)
    )
    done = subprocess.run(
        [sys.executable, "-m", "projector", "audit", hour_token(HOUR)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # The log holds 3 clicks that Redis does not serve (and nothing the audit asked was denied).
    assert done.returncode == 1, done.stdout + done.stderr
    assert "log clicks=3" in done.stdout, done.stdout
    assert "served clicks=0" in done.stdout, done.stdout
    assert "ermission" not in done.stderr, done.stderr


async def test_the_audit_writes_its_results_only(servers: tuple[Server, Server]) -> None:
    valkey = servers[1]
    keys = Keys(Settings().key_prefix)
    admin = Redis.from_url(valkey.role_url("admin"))
    await admin.set(keys.generation(0), 1)
    audit = Redis.from_url(valkey.role_url("audit"))
    assert await audit.get(keys.generation(0)) == b"1"
    await Records(audit, keys).save(HourAudit(HOUR, ()), 1)  # its own keys: allowed
    await Records(audit, keys).raise_through(HOUR)
    assert await Records(audit, keys).through() == HOUR
    for forbidden in (
        audit.set(keys.generation(0), 2),
        audit.hincrby(CellLayout(keys).counts(Cell.of_hour(1, 0, HOUR)), "clicks", 1),
        audit.pfadd(CellLayout(keys).users(Cell.of_hour(1, 0, HOUR)), "x"),
        audit.delete(keys.watermark(1, 0)),
        audit.zadd(keys.dedup(1, 0), {"u\nk": 1}),
        audit.flushall(),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            await forbidden
    with pytest.raises(redis.exceptions.ResponseError):
        await audit.eval("return redis.call('SET', KEYS[1], 3)", 1, keys.generation(0))
    assert await admin.get(keys.generation(0)) == b"1"
    await admin.aclose()
    await audit.aclose()


async def test_the_audit_cannot_publish_events_or_purge(servers: tuple[Server, Server], admin: NATS) -> None:
    settings = Settings()
    nc, errors = await connect_as(servers[0], "audit")
    before = (await admin.jetstream().stream_info(settings.stream_name)).state.messages
    js = nc.jetstream(timeout=1)
    with pytest.raises(nats.errors.TimeoutError):  # never reaches JetStream
        await js.publish(f"{settings.subject_prefix}.{hour_token(HOUR)}.0", b"forged")
    with pytest.raises(nats.errors.TimeoutError):
        await js.purge_stream(settings.stream_name)

    async def seen() -> list[Exception]:
        return list(errors)

    found = await eventually(seen, lambda e: len(e) >= 2)
    assert all("permissions violation" in str(e).lower() for e in found), found
    assert (await admin.jetstream().stream_info(settings.stream_name)).state.messages == before
    await nc.close()
