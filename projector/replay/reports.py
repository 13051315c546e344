"""What a replay reports when done, what each partition's fold built, and the refusal that changes nothing."""

from __future__ import annotations

import time
from dataclasses import dataclass


class ReplayRefused(RuntimeError):
    """The replay could not be done as asked; nothing live was changed."""


@dataclass(frozen=True, slots=True)
class ReplayReport:
    generation: int
    previous: int | None
    messages: int
    events: int
    seconds: float


@dataclass(frozen=True, slots=True)
class Built:
    """One partition folded: how much, and up to which stream sequence."""

    messages: int
    events: int
    watermark: int


def report(gen: int, previous: int | None, built: list[Built], started: float) -> ReplayReport:
    return ReplayReport(
        gen,
        previous,
        sum(b.messages for b in built),
        sum(b.events for b in built),
        time.perf_counter() - started,
    )
