"""Retrying with capped exponential backoff: how every process waits for a dependency to come up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

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
