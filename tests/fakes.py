"""In-memory stand-ins for the I/O seams, for unit tests (as httpx's MockTransport stands in for a network).

`MemoryProjections` follows `projector/projections/scripts/apply.lua` rule for rule; `test_seams.py`
runs the same scenarios against it and against the real Redis store, so the fake cannot drift from
the real thing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Protocol

from contract.schema import Kind
from projector.fold.deltas import Deltas
from projector.projections.store import ApplyResult, Outcome
from server.failures import Unavailable


class Projections(Protocol):
    """The projector's write seam: the projections it keeps (Redis in production, a dict in unit tests)."""

    async def current_generation(self, partition: int) -> int: ...

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


@dataclass
class MemoryEventLog:
    """An append-only log: sequences from 1, a subject per message, and a switch to make it fail."""

    messages: list[tuple[int, str, bytes]] = field(default_factory=list)
    down: bool = False

    async def append(self, subject: str, payload: bytes, timeout_s: float = 1.0) -> int:
        if self.down:
            raise Unavailable("NATS", "the fake log is down")
        self.messages.append((len(self.messages) + 1, subject, payload))
        return len(self.messages)


@dataclass
class _Hour:
    users: set[str] = field(default_factory=set)
    clicks: int = 0
    impressions: int = 0


@dataclass
class MemoryProjections:
    """Exact where Redis estimates (a set, not a HyperLogLog); otherwise the same rules as apply.lua."""

    window_ms: int = 600_000
    generation: int = 1
    fences: dict[int, str] = field(default_factory=dict)
    watermarks: dict[tuple[str, int], int] = field(default_factory=dict)
    hours: dict[tuple[str, int, int], _Hour] = field(default_factory=lambda: defaultdict(_Hour))
    dedup: dict[tuple[str, int], dict[str, int]] = field(default_factory=lambda: defaultdict(dict))

    async def current_generation(self, partition: int) -> int:
        return self.generation

    async def watermark(self, gen: int, partition: int) -> int:
        return self.watermarks.get((str(gen), partition), 0)

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
        g = str(gen)
        if live and g != str(self.generation):
            return ApplyResult(Outcome.GENERATION_MOVED, 0)
        if epoch and self.fences.get(partition) != epoch:
            return ApplyResult(Outcome.FENCED, 0)
        current = self.watermarks.get((g, partition), 0)
        if current != expected:
            return ApplyResult(Outcome.WATERMARK_MOVED, current)
        for hour, delta in deltas.hours.items():
            state = self.hours[(g, hour, partition)]
            state.users |= delta.users
            state.clicks += delta.clicks
            state.impressions += delta.impressions
        seen = self.dedup[(g, partition)]
        for event in deltas.keyed:
            last = seen.get(event.member)
            if last is None or event.stream_ms - last > self.window_ms:
                seen[event.member] = event.stream_ms
                state = self.hours[(g, event.hour, partition)]
                state.users.add(event.user)
                if event.kind is Kind.CLICK:
                    state.clicks += 1
                else:
                    state.impressions += 1
        for member, at in list(seen.items()):
            if at < deltas.last_ms - self.window_ms:
                del seen[member]
        self.watermarks[(g, partition)] = deltas.last_seq
        return ApplyResult(Outcome.APPLIED, deltas.last_seq)

    def totals(self, hour: int, gen: int | None = None) -> tuple[int, int, int]:
        """(unique users, clicks, impressions) of the hour over every partition."""
        g = str(self.generation if gen is None else gen)
        parts = [h for (hg, hh, _), h in self.hours.items() if hg == g and hh == hour]
        users: set[str] = set().union(*(h.users for h in parts)) if parts else set()
        return len(users), sum(h.clicks for h in parts), sum(h.impressions for h in parts)
