"""Change notices: the projector tells the read side which hours changed, so caches refresh at once."""

from __future__ import annotations

from nats.aio.client import Client as NATS

from contract import schema
from contract.hours import changes_subject
from deploy.settings import Settings


async def announce(nc: NATS, settings: Settings, hours: tuple[int, ...] | None) -> None:
    """Tell the read side which hours changed (None: all), so caches refresh at once."""
    notice = schema.encode_changed(schema.HoursChanged(hours))
    await nc.publish(changes_subject(settings.stream_name), notice)
