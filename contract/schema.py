"""The wire schema of the event log: frozen msgspec Structs, tagged with a version so old events decode.

Events travel as JSON: `nats stream view` shows them readably, msgspec decodes them about as fast as
msgpack at these sizes, and batching (many events per message) amortises the extra bytes.
"""

from __future__ import annotations

import re
from enum import StrEnum
from operator import attrgetter

import msgspec


class Kind(StrEnum):
    CLICK = "click"
    IMPRESSION = "impression"


Dimensions = tuple[tuple[str, str], ...]
"""An event's dimension values as (name, value) pairs, sorted by name: `(("campaign", "spring"),)`."""


class Event(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One tracked event. Encoded as a compact array: `[timestamp_ms, user, kind, key]`, and
    `[timestamp_ms, user, kind, key, [[name, value], ...]]` when it carries dimensions (version 2)."""

    ts: int
    """Milliseconds since the epoch, as the client sent it; its UTC hour is where the event counts."""
    user: str
    kind: Kind
    key: str | None = None
    """The client's Idempotency-Key, when it sent one (later versions dedupe on it)."""
    dims: Dimensions = ()
    """The dimensions the event was sent with (ANALYTICS_DIMENSIONS), sorted by name; none: ()."""


class BatchV1(msgspec.Struct, frozen=True, tag=1, tag_field="v", gc=False):
    """One stream message: events of one subject (one hour, one partition) appended together. Its
    events carry no dimensions."""

    events: tuple[Event, ...]


class BatchV2(msgspec.Struct, frozen=True, tag=2, tag_field="v", gc=False):
    """Version 1 whose events may carry dimensions: written only when one of them does, so a reader
    that knows only version 1 keeps reading every batch without them (and stops, never skipping, at
    the first with them)."""

    events: tuple[Event, ...]


AnyBatch = BatchV1 | BatchV2
"""Every version a reader must still decode."""

KNOWN_VERSIONS = frozenset({1, 2})


def batch_of(events: tuple[Event, ...]) -> AnyBatch:
    """The batch new messages are written as: version 2 when an event carries dimensions, else 1."""
    return BatchV2(events=events) if any(map(_DIMS, events)) else BatchV1(events=events)


_DIMS = attrgetter("dims")


class UnknownVersion(ValueError):
    """A batch written by a newer schema than this reader knows: never skip it, upgrade the reader."""

    def __init__(self, version: int) -> None:
        super().__init__(f"unknown schema version {version}")
        self.version = version


class _Versioned(msgspec.Struct):
    v: int


_encoder = msgspec.json.Encoder()
_FOUR_FIELDS = attrgetter("ts", "user", "kind", "key")
"""An event as version 1 writes it."""
_decoder: msgspec.json.Decoder[AnyBatch] = msgspec.json.Decoder(AnyBatch)
_version_decoder = msgspec.json.Decoder(_Versioned)


def encode(batch: AnyBatch) -> bytes:
    if isinstance(batch, BatchV1):
        # Four fields an event, as version 1 always had: a reader that knows only version 1 rejects a
        # fifth, so the dimensions' empty default is left out.
        return _encoder.encode({"v": 1, "events": list(map(_FOUR_FIELDS, batch.events))})
    return _encoder.encode(batch)


def encode_event(event: Event) -> bytes:
    if not event.dims:
        return _encoder.encode(_FOUR_FIELDS(event))
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


DIMENSION_NAME_MAX = 32
DIMENSION_NAME_RULE = f"[a-z][a-z0-9_]{{0,{DIMENSION_NAME_MAX - 1}}}"
DIMENSION_NAME = re.compile(DIMENSION_NAME_RULE)
"""A dimension's name, as ANALYTICS_DIMENSIONS declares it and a query parameter names it."""
DIMENSION_VALUE = re.compile(r"[A-Za-z0-9._:/-]{1,64}")
"""A dimension's value: 1-64 characters that need no escaping in a URL, a CSV cell or a key."""
DIMENSION_VALUE_RULE = "must be 1-64 characters of A-Z a-z 0-9 . _ : / -"
RESERVED_NAMES = frozenset(
    {"timestamp", "user", "event", "click", "impression"}
    | {"from", "to", "tz", "granularity", "by", "sort", "top"}
)
"""Query parameters of the API itself, which no dimension may be named."""
MAX_DIMENSIONS = 16


def dimension_names_problem(names: tuple[str, ...]) -> str | None:
    """Why a declaration of dimensions (ANALYTICS_DIMENSIONS) is wrong, or None."""
    if len(names) > MAX_DIMENSIONS:
        return f"at most {MAX_DIMENSIONS} dimensions, got {len(names)}"
    for name in names:
        if not DIMENSION_NAME.fullmatch(name):
            return f"{name[:40]!r} is not a dimension name ({DIMENSION_NAME_RULE})"
        if name in RESERVED_NAMES:
            return f"{name!r} is a parameter of the API itself"
    if len(set(names)) < len(names):
        return "a dimension is named twice"
    return None


MAX_PAIRS = 4


def pairs_problem(pairs: tuple[tuple[str, str], ...], declared: tuple[str, ...]) -> str | None:
    """Why a declaration of dimension pairs (ANALYTICS_DIMENSION_PAIRS) is wrong, or None."""
    if len(pairs) > MAX_PAIRS:
        return f"at most {MAX_PAIRS} pairs, got {len(pairs)}"
    known = ", ".join(declared) or "none"
    for first, second in pairs:
        shown = f"{first[:40]}:{second[:40]}"
        if not first or not second:
            return f"{shown!r} is not first:second"
        for name in (first, second):
            if name not in declared:
                return f"{shown!r} names {name[:40]!r}, not a declared dimension ({known})"
        if first == second:
            return f"{shown!r} pairs a dimension with itself"
    if len(set(pairs)) < len(pairs):
        return "a pair is named twice"
    return None


def dims_problem(dims: Dimensions) -> str | None:
    """Why an event's dimensions break the rules ingest enforces, or None."""
    names = [name for name, _ in dims]
    if names != sorted(set(names)):
        return "dimensions must be sorted by name, each once"
    for name, value in dims:
        if not DIMENSION_NAME.fullmatch(name):
            return f"dimension name {name[:40]!r} is not {DIMENSION_NAME_RULE}"
        if not DIMENSION_VALUE.fullmatch(value):
            return f"{name}: {DIMENSION_VALUE_RULE}, got {value[:70]!r}"
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
