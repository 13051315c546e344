"""The JetStream appender on a real nats-server: only a PubAck with a sequence is ever success."""

from __future__ import annotations

import time

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import DiscardPolicy, StreamConfig

from ingest.appender import Appender
from server.failures import Unavailable


async def test_a_stored_append_returns_its_stream_sequence(nc: NATS) -> None:
    await nc.jetstream().add_stream(StreamConfig(name="APPENDOK", subjects=["appendok.>"]))
    appender = Appender(nc)
    first = await appender.append("appendok.a", b"1", timeout_s=2)
    second = await appender.append("appendok.a", b"2", timeout_s=2)
    assert (first, second) == (1, 2)


async def test_no_responders_is_unavailable_at_once(nc: NATS) -> None:
    started = time.monotonic()
    with pytest.raises(Unavailable, match="no stream is listening"):
        await Appender(nc).append("nobody.listens.here", b"x", timeout_s=5)
    assert time.monotonic() - started < 2  # the server says so; no waiting for the timeout


async def test_a_jetstream_error_reply_is_unavailable(nc: NATS) -> None:
    await nc.jetstream().add_stream(
        StreamConfig(name="APPENDFULL", subjects=["appendfull.>"], max_msgs=1, discard=DiscardPolicy.NEW)
    )
    appender = Appender(nc)
    await appender.append("appendfull.a", b"1", timeout_s=2)
    with pytest.raises(Unavailable, match="refused the append"):
        await appender.append("appendfull.a", b"2", timeout_s=2)


@pytest.mark.parametrize("reply", [b"hello", b'{"stream":"S","seq":0}', b"{}", b'{"error":{"code":500}}'])
async def test_a_reply_that_is_not_a_puback_with_a_sequence_is_unavailable(nc: NATS, reply: bytes) -> None:
    async def impostor(msg: Msg) -> None:
        await msg.respond(reply)

    sub = await nc.subscribe("impostor.x", cb=impostor)
    try:
        with pytest.raises(Unavailable):
            await Appender(nc).append("impostor.x", b"x", timeout_s=2)
    finally:
        await sub.unsubscribe()


async def test_silence_is_unavailable_after_the_timeout(nc: NATS) -> None:
    sub = await nc.subscribe("silent.x")  # takes the message, never answers
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable, match="no PubAck within"):
            await Appender(nc).append("silent.x", b"x", timeout_s=0.3)
        assert time.monotonic() - started < 2
    finally:
        await sub.unsubscribe()
