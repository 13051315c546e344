"""Cold hours, read through: hours the projector moved out of Redis (with their quarter-hours), read from
their snapshot entries in NATS and kept decoded in a bounded cache (an entry is immutable, so a cached
one is never stale)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import nats.errors
from nats.aio.client import Client as NATS
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from prometheus_client import Counter

from contract import hll, schema
from contract.buckets import parse_quarter_token
from contract.stream import snapshot_bucket, snapshot_hour_key
from server.failures import Unavailable

COLD_READS = Counter(
    "hourglass_cold_reads",
    "Hour-partitions read through to the snapshot store (source: store = fetched, memory = cached)",
    ["source"],
)


class EntryGone(LookupError):
    """The entry was replaced (the hour was thawed and snapshotted again) since Redis named it."""


@dataclass(frozen=True, slots=True)
class ColdHour:
    registers: bytes
    """The HyperLogLog's registers, one byte each (see contract.hll)."""
    clicks: int
    impressions: int
    quarters: tuple[ColdHour, ...] = ()
    """The hour's four quarter-hours; none in entries written before quarter-hours existed (they read
    as empty)."""

    def cell(self, token: str) -> ColdHour:
        """The hour itself (`YYYYMMDDHH`), or one of its quarter-hours (`YYYYMMDDHHMM`)."""
        if len(token) == 10:
            return self
        quarter = parse_quarter_token(token)[1]
        return self.quarters[quarter] if self.quarters else EMPTY_CELL


EMPTY_CELL = ColdHour(hll.registers(b""), 0, 0)


def _decoded(state: schema.HourState | schema.CellState) -> ColdHour:
    return ColdHour(hll.registers(state.hll or b""), state.clicks, state.impressions)


class ColdSource(Protocol):
    async def hour(self, partition: int, token: str, at: int) -> ColdHour: ...


class ColdStore:
    """The stream's snapshot bucket, opened on the first cold read (the stream owner creates it)."""

    def __init__(self, nc: NATS, stream_name: str, timeout_s: float = 2.0, max_entries: int = 1024) -> None:
        self._nc = nc
        self._timeout_s = timeout_s
        self._bucket = snapshot_bucket(stream_name)
        self._kv: KeyValue | None = None
        self._max = max_entries
        self._cache: OrderedDict[tuple[int, str, int], ColdHour] = OrderedDict()

    async def _store(self) -> KeyValue:
        if self._kv is None:
            try:
                self._kv = await self._nc.jetstream().key_value(self._bucket)
            except NotFoundError:
                raise Unavailable("NATS", f"snapshot bucket {self._bucket} does not exist") from None
        return self._kv

    async def hour(self, partition: int, token: str, at: int) -> ColdHour:
        key = (partition, token, at)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            COLD_READS.labels("memory").inc()
            return found
        try:
            kv = await asyncio.wait_for(self._store(), self._timeout_s)
            entry = await asyncio.wait_for(kv.get(snapshot_hour_key(partition, token, at)), self._timeout_s)
        except KeyNotFoundError:
            raise EntryGone(f"p{partition}.h{token}.w{at}") from None
        except (TimeoutError, nats.errors.Error) as exc:
            raise Unavailable("NATS", f"snapshot store: {type(exc).__name__}: {exc}") from exc
        if entry.value is None:
            raise EntryGone(f"p{partition}.h{token}.w{at}")
        state = schema.unpack_hour(entry.value)
        hour = _decoded(state)
        cold = ColdHour(hour.registers, hour.clicks, hour.impressions, tuple(map(_decoded, state.quarters)))
        COLD_READS.labels("store").inc()
        self._cache[key] = cold
        if len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return cold
