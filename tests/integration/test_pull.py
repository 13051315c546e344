"""The lean pull reader against a real JetStream consumer: order, positions, waiting, and nothing lost."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig

from projector.log import ephemeral_read
from projector.log.fetched import Meta
from projector.log.pull import Puller

_streams = itertools.count(1)


@pytest.fixture
async def puller(nc: NATS) -> AsyncIterator[Puller]:
    # A stream and subjects of each test's own: a stream deleted by the last test can still be going
    # away on the server when the next one adds its namesake, and a message of it then shows up here.
    global STREAM, SUBJECT
    n = next(_streams)
    STREAM, SUBJECT = f"PULL{n}", f"pull{n}"
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=STREAM, subjects=[f"{SUBJECT}.>"]))
    await js.add_consumer(STREAM, ConsumerConfig(durable_name="c", ack_policy=AckPolicy.ALL))
    yield Puller(nc, STREAM, "c")
    await js.delete_stream(STREAM)


STREAM, SUBJECT = "PULL", "pull"


async def publish(nc: NATS, n: int, start: int = 0) -> None:
    js = nc.jetstream()
    for i in range(start, start + n):
        await js.publish(f"{SUBJECT}.{i % 3}", str(i).encode())


async def test_available_messages_come_in_order_with_their_positions(nc: NATS, puller: Puller) -> None:
    await publish(nc, 10)
    got = await puller.fetch(4, 2.0)
    assert got.payloads == [b"0", b"1", b"2", b"3"]
    assert got.seqs == [1, 2, 3, 4]
    assert got.consumer_seqs == [1, 2, 3, 4]
    # The server's pending count is a snapshot it may take a hair early (seen: 5 with 6 left, about
    # one run in fifteen): the meta must carry what the reply subject says, and that is at most 6.
    pending = int(got.replies[3].split(b".")[-1])
    assert got.at(3).meta == Meta(4, 4, 1, got.stamps[3], pending)
    assert 0 <= pending <= 6
    assert got.pending == 6
    rest = await puller.fetch(100, 2.0)
    assert rest.payloads == [str(i).encode() for i in range(4, 10)]
    assert rest.delivered == [1] * 6
    await puller.close()


async def test_an_empty_consumer_times_out_and_a_message_published_while_waiting_is_returned(
    nc: NATS, puller: Puller
) -> None:
    with pytest.raises(TimeoutError):
        await puller.fetch(10, 0.3)
    waiting = asyncio.create_task(puller.fetch(10, 5.0))
    await asyncio.sleep(0.2)
    await publish(nc, 3)
    got = (await waiting).payloads
    got += [] if len(got) == 3 else (await puller.fetch(10, 2.0)).payloads
    assert got == [b"0", b"1", b"2"]
    await puller.close()


async def test_no_message_is_lost_or_repeated_across_many_small_fetches(nc: NATS, puller: Puller) -> None:
    async def produce() -> None:
        for start in range(0, 300, 30):
            await publish(nc, 30, start)
            await asyncio.sleep(0.01)

    producing = asyncio.create_task(produce())
    seen: list[int] = []
    while len(seen) < 300:
        try:
            got = await puller.fetch(7, 0.5)
        except TimeoutError:
            continue
        seen += got.seqs
        await puller.ack(got.replies[-1])
    await producing
    assert seen == list(range(1, 301))
    await puller.close()


async def test_the_reader_leaves_every_other_subscription_of_its_connection_alone(
    nc: NATS, puller: Puller
) -> None:
    await publish(nc, 2)
    other = await nc.subscribe("elsewhere")
    assert len(await puller.fetch(10, 2.0)) == 2
    await nc.publish("elsewhere", b"still here")
    assert (await other.next_msg(2.0)).data == b"still here"
    await puller.close()
    await publish(nc, 1, start=2)
    second = Puller(nc, STREAM, "c")
    assert (await second.fetch(10, 2.0)).payloads == [b"2"]
    await second.close()


async def test_messages_split_across_socket_reads_arrive_whole_and_in_order(nc: NATS, puller: Puller) -> None:
    js = nc.jetstream()
    payloads = [bytes([65 + i % 26]) * (20_000 + 997 * i) for i in range(60)]  # 20-80 kB each
    for i, payload in enumerate(payloads):
        await js.publish(f"{SUBJECT}.{i % 3}", payload)
    got: list[bytes] = []
    while len(got) < len(payloads):
        got += (await puller.fetch(7, 2.0)).payloads
    assert got == payloads
    await puller.close()


async def test_a_log_read_whose_consumer_goes_away_reads_on_through_a_fresh_one_each_message_once(
    nc: NATS,
) -> None:
    """After a partition healed, the audit's consumer went quiet with messages pending and the audit
    gave up ("no message within 5.0s"); a fresh consumer now takes over from the next sequence."""
    n = next(_streams)
    stream, subject = f"READ{n}", f"read{n}"
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=stream, subjects=[f"{subject}.>"]))
    for i in range(25):
        await js.publish(f"{subject}.{i % 2}", str(i).encode())
    config = ConsumerConfig(filter_subject=f"{subject}.>", deliver_policy=DeliverPolicy.ALL)
    ephemeral_read.READ_FETCH, saved = 10, ephemeral_read.READ_FETCH
    try:
        seen: list[bytes] = []
        batches = ephemeral_read.delivered(nc, stream, config, "auto", quiet_s=0.3)
        async for fetched in batches:
            if not seen:  # the consumer vanishes, as one on a cut-off server does for its readers
                for name in [info.name for info in await js.consumers_info(stream)]:
                    await js.delete_consumer(stream, name)
            seen.extend(fetched.payloads)
    finally:
        ephemeral_read.READ_FETCH = saved
        await js.delete_stream(stream)
    assert seen == [str(i).encode() for i in range(25)]
