"""Retrying with capped exponential backoff: how every process waits for a dependency to come up, and
what it logs meanwhile (nats-py, which retries on its own, says each failed try in one line)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

nats_log = logging.getLogger("nats")

FIRST_DELAY_S = 0.2
MAX_DELAY_S = 5.0


async def with_backoff(
    attempt: Callable[[], Awaitable[T]],
    retry_on: tuple[type[BaseException], ...],
    what: str,
    log: logging.Logger,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """`attempt()` until it returns, waiting 0.2 s, 0.4 s, ... up to 5 s after each failure listed in
    `retry_on` (anything else propagates), with a WARNING naming `what` each time."""
    delay = FIRST_DELAY_S
    while True:
        try:
            return await attempt()
        except retry_on as exc:
            log.warning(
                "%s not reachable yet (%s); retrying in %.1fs", what, exc or type(exc).__name__, delay
            )
            await sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)


def reason(exc: BaseException) -> str:
    """The error in a few words (nats-py and redis-py messages name hosts and ports, never passwords)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class NatsLog:
    """Says what happens to one connection, named `name`, to `servers` (redacted URLs). `quiet` keeps
    errors to itself (the last one in `last`) while a caller that says them in its own line waits."""

    def __init__(self, name: str, servers: str, *, quiet: bool = False) -> None:
        self.name, self.servers, self.quiet = name, servers, quiet
        self.last: BaseException | None = None

    async def error(self, exc: Exception) -> None:
        """nats-py wants coroutine functions for its callbacks."""
        self.last = exc
        if not self.quiet:
            nats_log.warning("NATS at %s (%s): %s", self.servers, self.name, reason(exc))

    async def reconnected(self) -> None:
        nats_log.info("NATS at %s (%s): connected again", self.servers, self.name)

    def options(self) -> dict[str, Any]:
        """The keyword arguments for `nats.connect` (disconnects are said by `error`, and nats-py also
        calls its disconnected callback on an orderly close, so it is left alone)."""
        return {"error_cb": self.error, "reconnected_cb": self.reconnected}
