"""NATS adapter of the write side: keeps the stream defined and appends events, awaiting the PubAck."""

from __future__ import annotations

import logging
from collections.abc import Callable

import nats.errors
from nats.aio.client import Client as NATS
from nats.js.errors import BadRequestError, NotFoundError

from contract import schema
from contract.errors import Unavailable
from contract.hours import hour_of, partition_of, subject
from contract.settings import Settings
from contract.stream import stream_config
from ingest.appender import Appender
from ingest.batcher import Batcher

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
    """Appends events with group commit: a 204 waits for the PubAck of the message holding its event."""

    def __init__(
        self, nc: NATS, settings: Settings, on_batch: Callable[[int, float], None] | None = None
    ) -> None:
        self._nc = nc
        self._appender = Appender(nc)
        self._settings = settings
        self._batcher = Batcher(
            self._send,
            max_events=settings.publish_max_batch,
            linger_s=settings.publish_linger_ms / 1000,
            max_in_flight=settings.publish_max_in_flight,
            on_batch=on_batch,
        )

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
        await self._batcher.submit(subj, event)

    async def _send(self, subj: str, payload: bytes) -> None:
        try:
            await self._appender.append(subj, payload, self._settings.publish_timeout_s)
        except (nats.errors.Error, OSError) as exc:
            raise Unavailable("NATS", f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        await self._batcher.close()
