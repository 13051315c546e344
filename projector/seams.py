"""The projector's write seam: the projections it keeps (Redis in production, a dict in unit tests)."""

from __future__ import annotations

from typing import Protocol

from projector.fold import Deltas
from projector.store import ApplyResult


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
