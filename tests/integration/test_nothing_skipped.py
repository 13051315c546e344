"""Nothing is skipped silently: dead letters for what cannot apply, a stop in front of what cannot be read."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import httpx
import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from api.reader import HourTotals
from contract import schema
from contract.hours import HOUR_MS, partition_of, subject
from contract.keys import Keys
from contract.schema import Event
from contract.stream import dead_letter_stream
from deploy.settings import Settings
from tests.conftest import Server
from tests.helpers import eventually, metric, stored_hour
from tests.integration.conftest import Projectors, production_stack, scoped_settings, with_roles

HOUR = 13
TS = HOUR * HOUR_MS


def user_in(partition: int, settings: Settings, tag: str = "u") -> str:
    return next(
        f"{tag}{i}" for i in range(1000) if partition_of(f"{tag}{i}", settings.partitions) == partition
    )


@pytest.fixture
def scoped(own_nats: Server, own_redis: Server) -> Settings:
    return scoped_settings(own_nats, own_redis)


@pytest.fixture
async def role_stack(
    scoped: Settings, own_nats: Server, own_redis: Server
) -> AsyncIterator[httpx.AsyncClient]:
    """The stack under its roles' credentials, started before the test (and before caplog's handler,
    which the app's logging setup would otherwise replace)."""
    async for http in production_stack(scoped, roles=with_roles(scoped, own_nats, own_redis)):
        yield http


async def test_garbage_and_rule_breaking_events_are_dead_lettered_while_later_events_count(
    role_stack: httpx.AsyncClient,
    scoped: Settings,
    own_nats: Server,
    own_redis: Server,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The projector writes its dead letters as `projector`, the HTTP process appends as `ingest`.
    nc = await nats.connect(own_nats.url)
    redis = Redis.from_url(own_redis.url)
    try:
        await dead_letter_scenario(role_stack, nc, redis, scoped, caplog)
    finally:
        await nc.close()
        await redis.aclose()


async def dead_letter_scenario(
    client: httpx.AsyncClient, nc: NATS, redis: Redis, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="projector")
    before = metric("hourglass_projector_dead_letters_total")
    good = user_in(0, settings)
    where = subject(settings.subject_prefix, HOUR, 0)
    js = nc.jetstream()
    garbage = await js.publish(where, b"this is not a batch")
    mixed = schema.batch_of(
        events=(
            Event(TS, good, schema.Kind.CLICK),
            Event(TS - HOUR_MS, good, schema.Kind.CLICK),  # another hour than its subject's
            Event(TS, "x" * 300, schema.Kind.CLICK),  # longer than ingest allows
        )
    )
    mixed_ack = await js.publish(where, schema.encode(mixed))
    for i in range(5):
        assert (await client.post(f"/analytics?timestamp={TS}&user=later{i}&impression")).status_code == 204

    expected = HourTotals(unique_users=6, clicks=1, impressions=5)
    assert await eventually(lambda: stored_hour(redis, settings, HOUR), lambda t: t == expected) == expected
    dead = await eventually(lambda: dead_letters(nc, settings), lambda d: len(d) == 3)
    assert [(h["Hourglass-Stream-Seq"], h["Hourglass-Event-Index"]) for h, _ in dead] == [
        (str(garbage.seq), "-1"),
        (str(mixed_ack.seq), "1"),
        (str(mixed_ack.seq), "2"),
    ]
    assert all(h["Hourglass-Subject"] == where for h, _ in dead)
    assert dead[0][1] == b"this is not a batch"
    assert "not a batch" in dead[0][0]["Hourglass-Reason"]
    assert "not in the hour of its subject" in dead[1][0]["Hourglass-Reason"]
    assert json.loads(dead[2][1]) == [TS, "x" * 300, "click", None]
    assert "longer than 256 bytes" in dead[2][0]["Hourglass-Reason"]
    assert metric("hourglass_projector_dead_letters_total") - before == 3
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "dead-lettered" in r.getMessage()
    ]
    assert len(warnings) == 3


async def dead_letters(nc: NATS, settings: Settings) -> list[tuple[dict[str, str], bytes]]:
    js = nc.jetstream()
    info = await js.stream_info(dead_letter_stream(settings.stream_name))
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(dead_letter_stream(settings.stream_name), seq)
        out.append((dict(msg.headers or {}), msg.data or b""))
    return out


class BatchV99(msgspec.Struct, frozen=True, tag=99, tag_field="v"):
    events: tuple[Event, ...]


_newer = msgspec.json.Decoder(schema.BatchV1 | BatchV99)


def newer_decoder(payload: bytes) -> schema.AnyBatch:
    """What a projector of a later release would decode: version 99 as well as version 1."""
    return schema.batch_of(events=_newer.decode(payload).events)


async def test_a_batch_of_an_unknown_version_stops_its_partition_until_a_projector_knows_it(
    client: httpx.AsyncClient,
    nc: NATS,
    redis: Redis,
    settings: Settings,
    projectors: Projectors,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="projector")
    stuck, other = 2, 1
    first = user_in(stuck, settings, "first")
    newer = await nc.jetstream().publish(
        subject(settings.subject_prefix, HOUR, stuck),
        json.dumps({"v": 99, "events": [[TS, user_in(stuck, settings, "v99-"), "click", None]]}).encode(),
    )
    for user in (first, user_in(stuck, settings, "after"), user_in(other, settings, "elsewhere")):
        assert (await client.post(f"/analytics?timestamp={TS}&user={user}&impression")).status_code == 204
    await projectors.start()

    # The other partition applies; the stopped one holds its watermark in front of the v99 batch.
    await eventually(lambda: stored_hour(redis, settings, HOUR), lambda t: t.impressions == 1)
    why = f"projector: partition {stuck} stopped at stream seq {newer.seq}: unknown schema version 99"
    ready = await eventually(lambda: client.get("/readyz"), lambda r: why in r.text)
    assert ready.status_code == 503
    assert metric("hourglass_projector_stalled_seq", {"partition": str(stuck)}) == newer.seq
    keys = Keys(settings.key_prefix)
    assert int(await redis.get(keys.watermark(1, stuck)) or 0) < newer.seq
    assert any(
        "unknown schema version 99" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR
    )
    assert (await stored_hour(redis, settings, HOUR)).impressions == 1

    # Upgrade: the old projector goes, one that knows version 99 comes; nothing was lost.
    await projectors.stop_all()
    await projectors.start(newer_decoder)
    expected = HourTotals(unique_users=4, clicks=1, impressions=3)
    assert await eventually(lambda: stored_hour(redis, settings, HOUR), lambda t: t == expected) == expected
    await eventually(lambda: client.get("/readyz"), lambda r: r.status_code == 200)


async def test_a_crash_looping_worker_is_logged_counted_and_makes_readyz_fail(
    client: httpx.AsyncClient,
    redis: Redis,
    settings: Settings,
    projectors: Projectors,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="projector")

    def broken(payload: bytes) -> schema.AnyBatch:
        raise RuntimeError("boom")

    user = user_in(3, settings, "crash")
    assert (await client.post(f"/analytics?timestamp={TS}&user={user}&click")).status_code == 204
    before = metric("hourglass_projector_errors_total", {"partition": "3"})
    await projectors.start(broken)
    ready = await eventually(lambda: client.get("/readyz"), lambda r: "partition 3 is failing" in r.text)
    assert ready.status_code == 503
    assert "RuntimeError: boom" in ready.text
    await eventually(
        lambda: asyncio.sleep(0, metric("hourglass_projector_errors_total", {"partition": "3"})),
        lambda n: n - before >= 2,
    )
    failures = [r for r in caplog.records if "worker failed" in r.getMessage()]
    assert failures
    assert all(r.exc_info is not None for r in failures)

    await projectors.stop_all()
    await projectors.start()  # fixed: the partition applies again and readiness comes back
    await eventually(lambda: stored_hour(redis, settings, HOUR), lambda t: t.clicks == 1)
    await eventually(lambda: client.get("/readyz"), lambda r: r.status_code == 200)
