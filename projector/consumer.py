"""NATS adapter of the projector: positioning durable consumers, reading messages, filing dead letters."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NamedTuple

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from contract import schema
from contract.hours import changes_subject, parse_subject, partition_filter
from contract.settings import Settings
from contract.stream import consumer_name, dead_letter_stream, dead_letter_subject
from projector import metrics
from projector.digest import Digest, digest
from projector.fold import Message
from projector.pull import Fetched, Meta, Pulled, meta_of
from projector.screen import Rejected, screen

Decoder = Callable[[bytes], schema.AnyBatch]

log = logging.getLogger("projector")

ACK_WAIT_S = 10.0


async def announce(nc: NATS, settings: Settings, hours: tuple[int, ...] | None) -> None:
    """Tell the read side which hours changed (None: all), so caches refresh at once."""
    notice = schema.encode_changed(schema.HoursChanged(hours))
    await nc.publish(changes_subject(settings.stream_name), notice)


class Read(NamedTuple):
    """A stream message as the projector takes it: what the fold may see, and what is dead."""

    message: Message
    rejected: list[Rejected]
    raw: Msg


def read(msg: Msg, settings: Settings, decoder: Decoder = schema.decode, meta: Meta | None = None) -> Read:
    """Decode and screen one message. Raises UnknownVersion: such a batch is never skipped.

    The one-message definition that `digest_pulled` (what the projector and replay run) must equal."""
    if meta is None:
        meta = meta_of(msg.reply)
    seq, stream_ms = meta.stream_seq, meta.stream_ms
    try:
        batch = decoder(msg.data)
    except schema.UnknownVersion:
        raise
    except (msgspec.DecodeError, ValueError) as exc:
        return Read(
            Message(seq, schema.Batch(events=()), stream_ms), [Rejected(-1, f"not a batch: {exc}")], msg
        )
    try:
        hour, partition = parse_subject(settings.subject_prefix, msg.subject)
    except ValueError:
        reason = f"subject {msg.subject} is not <prefix>.<YYYYMMDDHH>.<partition>"
        return Read(Message(seq, schema.Batch(events=()), stream_ms), [Rejected(-1, reason)], msg)
    kept, rejected = screen(batch, hour, partition, settings.partitions)
    return Read(Message(seq, kept, stream_ms), rejected, msg)


def digest_fetched(
    fetched: Fetched, settings: Settings, after: int, decoder: Decoder = schema.decode
) -> Digest:
    """`digest` of fetched messages: their deltas past stream seq `after`, and their dead letters."""
    return digest(
        fetched.subjects,
        fetched.payloads,
        fetched.seqs,
        fetched.stamps,
        prefix=settings.subject_prefix,
        partitions=settings.partitions,
        after=after,
        decoder=decoder,
    )


async def dead_letter(
    js: JetStreamContext, settings: Settings, partition: int, msg: Pulled, rejected: list[Rejected]
) -> None:
    """File each rejected part of a message in the dead-letter stream, awaiting its PubAck.

    The message id makes a second filing of the same dead letter (after a crash, or by a replay)
    a duplicate that JetStream drops within its duplicate window.
    """
    seq = msg.meta.stream_seq
    for index, reason in rejected:
        whole = index < 0
        payload = msg.data if whole else schema.encode_event(schema.decode(msg.data).events[index])
        headers = {
            "Nats-Msg-Id": f"{settings.stream_name}:{seq}:{index}",
            "Hourglass-Stream-Seq": str(seq),
            "Hourglass-Subject": msg.subject,
            "Hourglass-Event-Index": str(index),
            "Hourglass-Reason": " ".join(reason.split()),
        }
        await js.publish(
            dead_letter_subject(settings.stream_name, partition),
            payload,
            headers=headers,
            stream=dead_letter_stream(settings.stream_name),
        )
        metrics.DEAD_LETTERS.inc()
        what = "message" if whole else f"event {index} of message"
        log.warning(
            "p%d: dead-lettered %s at stream seq %d on %s: %s", partition, what, seq, msg.subject, reason
        )


async def position_consumer(
    js: JetStreamContext, settings: Settings, partition: int, watermark: int, batch: int
) -> None:
    """Make the partition's durable consumer deliver everything after `watermark`.

    Redis holds the truth about what was applied, so the consumer is recreated at watermark + 1 each
    time a projector takes the partition up: that also drops pull requests a previous holder left
    waiting on the server, which would otherwise swallow messages until their ack wait ran out.
    """
    stream, durable = settings.stream_name, consumer_name(partition)
    subject_filter = partition_filter(settings.subject_prefix, partition)
    try:
        info = await js.consumer_info(stream, durable)
        acked = info.ack_floor.stream_seq if info.ack_floor else 0
        if acked > watermark:
            log.warning(
                "p%d: consumer had acked up to %d but Redis holds only %d: rebuilding from there",
                partition,
                acked,
                watermark,
            )
        await js.delete_consumer(stream, durable)
    except NotFoundError:
        pass
    await js.add_consumer(
        stream,
        ConsumerConfig(
            durable_name=durable,
            filter_subject=subject_filter,
            ack_policy=AckPolicy.ALL,  # one ack per fetch covers every message before it
            ack_wait=ACK_WAIT_S,
            max_ack_pending=max(20_000, batch * 4),
            max_deliver=-1,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if watermark else DeliverPolicy.ALL,
            opt_start_seq=watermark + 1 if watermark else None,
        ),
    )
