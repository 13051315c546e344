"""A stretch of the stream read once, in stream order, through ephemeral consumers without acks: when
one goes quiet with messages still pending (a server it lived on was cut off or restarted), a fresh
consumer takes over from the next sequence, a few times at most. What the audit, a single-hour replay
and the raw export read."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator

from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from projector.log.fetched import Fetched
from projector.log.pull import Puller

log = logging.getLogger("projector")

READ_FETCH = 1000
"""Messages asked for at a time."""

QUIET_S = 5.0
"""How long a consumer with messages pending may deliver nothing before another takes over."""

TAKEOVERS = 4
"""Fresh consumers tried, one after another, before the read gives up (TimeoutError)."""


async def delivered(
    nc: NATS, stream: str, config: ConsumerConfig, reader: str, quiet_s: float = QUIET_S
) -> AsyncGenerator[Fetched, None]:
    """Batches of what `config` (a filter and where to start) selects, each message once; the caller
    closes the generator (contextlib.aclosing) when it stops early."""
    js = nc.jetstream()
    config.ack_policy = AckPolicy.NONE
    config.inactive_threshold = 30.0
    takeovers = 0
    while True:
        try:
            consumer = await js.add_consumer(stream, config)
        except TimeoutError:
            takeovers += 1
            if takeovers > TAKEOVERS:
                raise
            continue
        pending = consumer.num_pending or 0
        puller = Puller(nc, stream, consumer.name, reader)
        try:
            while pending > 0:
                try:
                    fetched = await puller.fetch(min(READ_FETCH, pending), quiet_s)
                except TimeoutError:
                    takeovers += 1
                    if takeovers > TAKEOVERS:
                        raise
                    log.warning(
                        "a log read went quiet with %d messages pending; reading on through a fresh consumer",
                        pending,
                    )
                    break
                pending -= len(fetched)
                config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
                config.opt_start_seq = fetched.seqs[-1] + 1
                config.opt_start_time = None
                yield fetched
            else:
                return
        finally:
            await puller.close()
            with contextlib.suppress(Exception):  # it goes by itself after inactive_threshold anyway
                await js.delete_consumer(stream, consumer.name)
