"""The wire schema of the event log: frozen msgspec Structs, tagged with a version so old events decode.

Events travel as JSON: `nats stream view` shows them readably, msgspec decodes them about as fast as
msgpack at these sizes, and batching (many events per message) amortises the extra bytes.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec


class Kind(StrEnum):
    CLICK = "click"
    IMPRESSION = "impression"


class Event(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One tracked event. Encoded as a compact array: `[timestamp_ms, user, kind, key]`."""

    ts: int
    """Milliseconds since the epoch, as the client sent it; its UTC hour is where the event counts."""
    user: str
    kind: Kind
    key: str | None = None
    """The client's Idempotency-Key, when it sent one (later versions dedupe on it)."""


class BatchV1(msgspec.Struct, frozen=True, tag=1, tag_field="v", gc=False):
    """One stream message: events of one subject (one hour, one partition) appended together."""

    events: tuple[Event, ...]


Batch = BatchV1
"""The version new messages are written with."""

AnyBatch = BatchV1
"""Every version a reader must still decode; becomes a Union when a version is added."""

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyBatch)


def encode(batch: Batch) -> bytes:
    return _encoder.encode(batch)


def decode(payload: bytes) -> AnyBatch:
    """Raises msgspec.DecodeError (a ValueError) for a payload no version understands."""
    return _decoder.decode(payload)


class HoursChanged(msgspec.Struct, frozen=True):
    """Core-NATS notice from a projector or replay: these hours' projections changed (None: all)."""

    hours: tuple[int, ...] | None = None


_changed_decoder = msgspec.json.Decoder(HoursChanged)


def encode_changed(notice: HoursChanged) -> bytes:
    return _encoder.encode(notice)


def decode_changed(payload: bytes) -> HoursChanged:
    return _changed_decoder.decode(payload)
