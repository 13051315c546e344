"""The projector's I/O seams: the log it reads and the projections it writes (JetStream and Redis)."""

from __future__ import annotations

from typing import Protocol

from projector.fold import Deltas, Message
from projector.store import ApplyResult


class EventLog(Protocol):
    async def read(self, subject_filter: str, after: int, limit: int) -> list[Message]:
        """Up to `limit` decoded messages on `subject_filter` with stream sequence above `after`."""
        ...


class Projections(Protocol):
    async def current_generation(self) -> int: ...

    async def watermark(self, gen: int, partition: int) -> int: ...

    async def apply(
        self,
        gen: int | str,
        partition: int,
        expected: int,
        deltas: Deltas,
        *,
        epoch: str = "",
        live: bool = True,
    ) -> ApplyResult:
        """Add the deltas and move the watermark from `expected` to `deltas.last_seq`, atomically,
        deduplicating keyed events on stream time; refuse if the watermark, generation or fence moved."""
        ...
