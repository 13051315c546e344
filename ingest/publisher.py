"""NATS adapter of the write side: keeps the stream defined and appends events, awaiting the PubAck."""

from __future__ import annotations

import logging

import nats.errors
from nats.aio.client import Client as NATS
from nats.js.errors import APIError, BadRequestError, NotFoundError

from contract import schema
from contract.errors import Unavailable
from contract.hours import hour_of, partition_of, subject
from contract.settings import Settings
from contract.stream import stream_config

log = logging.getLogger("ingest")


async def ensure_stream(nc: NATS, settings: Settings) -> None:
    """Create the stream, or bring its configuration up to date; safe to run from every process."""
    js = nc.jetstream()
    config = stream_config(settings)
    try:
        await js.stream_info(settings.stream_name)
    except NotFoundError:
        try:
            await js.add_stream(config)
            log.info("created stream %s", settings.stream_name)
            return
        except BadRequestError:
            pass  # another process created it first
    await js.update_stream(config)


class Publisher:
    def __init__(self, nc: NATS, settings: Settings) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=settings.publish_timeout_s)
        self._settings = settings

    async def publish(self, event: schema.Event) -> None:
        """Returns once JetStream has stored the event; raises Unavailable otherwise."""
        if not self._nc.is_connected:
            raise Unavailable("NATS", "not connected")
        settings = self._settings
        subj = subject(
            settings.subject_prefix,
            hour_of(event.ts),
            partition_of(event.user, settings.partitions),
        )
        payload = schema.encode(schema.Batch(events=(event,)))
        try:
            await self._js.publish(
                subj, payload, timeout=settings.publish_timeout_s, stream=settings.stream_name
            )
        except (TimeoutError, nats.errors.Error, APIError, OSError) as exc:
            raise Unavailable("NATS", f"{type(exc).__name__}: {exc}") from exc
