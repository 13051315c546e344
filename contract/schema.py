"""The wire schema of the event log: frozen msgspec Structs, tagged with a version so old events decode.

Events travel as JSON: `nats stream view` shows them readably, msgspec decodes them about as fast as
msgpack at these sizes, and batching (many events per message) amortises the extra bytes.
"""

from __future__ import annotations

import re
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

KNOWN_VERSIONS = frozenset({1})


class UnknownVersion(ValueError):
    """A batch written by a newer schema than this reader knows: never skip it, upgrade the reader."""

    def __init__(self, version: int) -> None:
        super().__init__(f"unknown schema version {version}")
        self.version = version


class _Versioned(msgspec.Struct):
    v: int


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyBatch)
_version_decoder = msgspec.json.Decoder(_Versioned)


def encode(batch: Batch) -> bytes:
    return _encoder.encode(batch)


def encode_event(event: Event) -> bytes:
    return _encoder.encode(event)


def decode(payload: bytes) -> AnyBatch:
    """Raises UnknownVersion for a batch of a version this reader does not know, and
    msgspec.DecodeError (a ValueError) for a payload that is not a batch at all."""
    try:
        return _decoder.decode(payload)
    except msgspec.DecodeError:
        try:
            version = _version_decoder.decode(payload).v
        except msgspec.DecodeError:
            version = None
        if version is not None and version not in KNOWN_VERSIONS:
            raise UnknownVersion(version) from None
        raise


MAX_USER_BYTES = 256
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
"""Control characters (C0, DEL, C1); escaped, so the OpenAPI document can reuse the pattern."""
MAX_KEY_CHARS = 128


def user_problem(user: str) -> str | None:
    """Why a user name breaks the rules ingest enforces, or None."""
    if user == "":
        return "is empty"
    if user.isspace():
        return "is only whitespace"
    if len(user) * 4 > MAX_USER_BYTES and len(user.encode()) > MAX_USER_BYTES:
        return f"is longer than {MAX_USER_BYTES} bytes"
    if CONTROL.search(user):
        return "contains control characters"
    return None


def key_problem(key: str) -> str | None:
    """Why an Idempotency-Key breaks the rules ingest enforces, or None."""
    # For ASCII, printable is exactly 0x20 to 0x7E.
    if not 1 <= len(key) <= MAX_KEY_CHARS or not (key.isascii() and key.isprintable()):
        return f"must be 1 to {MAX_KEY_CHARS} printable ASCII characters"
    return None


class HoursChanged(msgspec.Struct, frozen=True):
    """Core-NATS notice from a projector or replay: these hours' projections changed (None: all)."""

    hours: tuple[int, ...] | None = None


_changed_decoder = msgspec.json.Decoder(HoursChanged)


def encode_changed(notice: HoursChanged) -> bytes:
    return _encoder.encode(notice)


def decode_changed(payload: bytes) -> HoursChanged:
    return _changed_decoder.decode(payload)


class CellState(msgspec.Struct, frozen=True, array_like=True):
    """One quarter-hour of an hour in a snapshot, as HourState holds the hour."""

    hll: bytes | None
    clicks: int
    impressions: int


class HourState(msgspec.Struct, frozen=True, array_like=True):
    """One stored bucket of one partition in a snapshot (an hour, or a day rollup: contract.buckets):
    the HyperLogLog as Redis stores it, and the counters; an hour also holds its quarter-hours."""

    hll: bytes | None
    clicks: int
    impressions: int
    quarters: tuple[CellState, ...] = ()
    """An hour's four quarter-hours in order; empty for a day rollup, and in entries written before
    quarter-hours existed."""


class DedupState(msgspec.Struct, frozen=True, array_like=True):
    entries: list[tuple[str, int]]
    """(`user\nkey`, stream ms when last counted) inside the dedup window."""


class ManifestV1(msgspec.Struct, frozen=True, tag=1, tag_field="v"):
    """A consistent cut of one partition: restoring it means these entries plus the stream after
    `watermark`, exactly. Entries are immutable; the manifest is written after all of them."""

    watermark: int
    hours: dict[str, int]
    """Hour token -> watermark of the entry that holds it (`snapshot_hour_key`)."""
    dedup: int
    """Watermark of the dedup entry (`snapshot_dedup_key`)."""


Manifest = ManifestV1

_pack = msgspec.msgpack.Encoder()
_unpack_hour = msgspec.msgpack.Decoder(HourState)
_unpack_dedup = msgspec.msgpack.Decoder(DedupState)
_unpack_manifest = msgspec.msgpack.Decoder(ManifestV1)


def pack(value: HourState | DedupState | ManifestV1) -> bytes:
    return _pack.encode(value)


def unpack_hour(raw: bytes) -> HourState:
    return _unpack_hour.decode(raw)


def unpack_dedup(raw: bytes) -> DedupState:
    return _unpack_dedup.decode(raw)


def unpack_manifest(raw: bytes) -> ManifestV1:
    return _unpack_manifest.decode(raw)
