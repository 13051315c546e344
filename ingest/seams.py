"""The write side's one I/O seam: the event log it appends to (JetStream in production)."""

from __future__ import annotations

from typing import Protocol


class EventLog(Protocol):
    async def append(self, subject: str, payload: bytes, timeout_s: float) -> int:
        """The stream sequence of the stored message, once stored; raises Unavailable otherwise."""
        ...
