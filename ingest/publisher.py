"""NATS adapter of the write side: appends events to the stream, awaiting the PubAck."""

from __future__ import annotations

import logging
from collections.abc import Callable

import nats.errors
from nats.aio.client import Client as NATS

from contract import schema
from contract.hours import hour_of, partition_of, subject
from deploy.settings import Settings
from ingest.appender import Appender
from ingest.batcher import Batcher
from ingest.seams import EventLog
from server.failures import Unavailable

log = logging.getLogger("ingest")


class Publisher:
    """Appends events with group commit: a 204 waits for the PubAck of the message holding its event."""

    def __init__(
        self,
        log: EventLog,
        settings: Settings,
        on_batch: Callable[[int, float], None] | None = None,
        connected: Callable[[], bool] = lambda: True,
    ) -> None:
        self._log = log
        self._connected = connected
        self._settings = settings
        self._batcher = Batcher(
            self._send,
            max_events=settings.publish_max_batch,
            linger_s=settings.publish_linger_ms / 1000,
            max_in_flight=settings.publish_max_in_flight,
            on_batch=on_batch,
        )

    @classmethod
    def over_nats(
        cls, nc: NATS, settings: Settings, on_batch: Callable[[int, float], None] | None = None
    ) -> Publisher:
        return cls(Appender(nc), settings, on_batch, connected=lambda: nc.is_connected)

    async def publish(self, event: schema.Event) -> None:
        """Returns once JetStream has stored the event; raises Unavailable otherwise."""
        if not self._connected():
            raise Unavailable("NATS", "not connected")
        await self._batcher.submit(self._subject(event), event)

    async def publish_all(self, events: list[schema.Event]) -> None:
        """Returns once JetStream has stored every event; raises Unavailable otherwise (some of them
        may be stored: a retry must carry the same keys)."""
        if not self._connected():
            raise Unavailable("NATS", "not connected")
        await self._batcher.submit_all([(self._subject(event), event) for event in events])

    def _subject(self, event: schema.Event) -> str:
        settings = self._settings
        return subject(
            settings.subject_prefix, hour_of(event.ts), partition_of(event.user, settings.partitions)
        )

    async def _send(self, subj: str, payload: bytes) -> None:
        try:
            await self._log.append(subj, payload, self._settings.publish_timeout_s)
        except (nats.errors.Error, OSError) as exc:
            raise Unavailable("NATS", f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        await self._batcher.close()
