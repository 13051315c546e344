"""Positioning a partition's durable consumer: it delivers everything after the watermark Redis holds."""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from contract.hours import partition_filter
from contract.stream import consumer_name
from deploy.settings import Settings
from projector import metrics

log = logging.getLogger("projector")

ACK_WAIT_S = 10.0


async def position_consumer(
    js: JetStreamContext,
    settings: Settings,
    partition: int,
    watermark: int,
    batch: int,
    rollback_counted: bool = False,
) -> None:
    """Make the partition's durable consumer deliver everything after `watermark`.

    Redis holds the truth about what was applied, so the consumer is recreated at watermark + 1 each
    time a projector takes the partition up: that also drops pull requests a previous holder left
    waiting on the server, which would otherwise swallow messages until their ack wait ran out.
    A consumer that had acked past `watermark` means Redis lost applies (a failover that promoted a
    stale replica, met by a projector that took the partition up anew): counted as a rollback, unless
    the caller `rollback_counted` it already.
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
            if not rollback_counted:
                metrics.ROLLBACKS.labels(str(partition)).inc()
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


async def partition_last_seq(js: JetStreamContext, settings: Settings, partition: int) -> int:
    """The stream sequence of the partition's last message (0 when it has none), from the stream
    itself: what no consumer, shared by name between projectors, can misreport."""
    try:
        found = await js.get_last_msg(
            settings.stream_name, partition_filter(settings.subject_prefix, partition)
        )
    except NotFoundError:
        return 0
    return found.seq or 0
