"""Reaching NATS and Redis from a command: within a deadline, or one line saying which one cannot be
reached and how to start it. Never a traceback, never a URL's password."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats
import nats.errors
import redis.exceptions
from nats.aio.client import Client as NATS

from deploy.backoff import FIRST_DELAY_S, MAX_DELAY_S, NatsLog, reason
from deploy.projections_client import ProjectionsClient, check_cluster, connect
from deploy.settings import Settings, redacted

log = logging.getLogger("projector")

HINT = "is ./just up running?"
NATS_DOWN = (TimeoutError, OSError, nats.errors.Error)
REDIS_DOWN = (
    OSError,
    TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.RedisClusterException,  # no listed node answered the cluster client yet
)

T = TypeVar("T")


class Unreachable(SystemExit):
    """A server the command needs did not answer in time: the one line to print, and exit 1."""

    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.line = line


async def reach_nats(settings: Settings, name: str, deadline_s: float) -> NATS:
    """Connected to NATS within `deadline_s`, or Unreachable."""
    # Quiet until connected: a failed try is said once, in the Unreachable line, with the last error.
    errors = NatsLog(name, redacted(settings.nats_url), quiet=True)
    options: dict[str, Any] = {**settings.nats_options(name), **errors.options()}
    # nats-py retries the first connect forever (as it reconnects later) and swallows a cancellation
    # that lands while it closes a failed attempt, so the attempt runs as a task of its own, cancelled
    # until it ends: the deadline and a stop signal both hold.
    connecting = asyncio.create_task(nats.connect(**options))
    try:
        done, _ = await asyncio.wait({connecting}, timeout=deadline_s)
    except asyncio.CancelledError:
        await _cancel_until_done(connecting)
        raise
    if not done:
        await _cancel_until_done(connecting)
        raise Unreachable(_line("NATS", settings.nats_url, deadline_s, errors.last or TimeoutError()))
    try:
        nc = connecting.result()
    except NATS_DOWN as exc:
        raise Unreachable(_line("NATS", settings.nats_url, deadline_s, errors.last or exc)) from None
    errors.quiet = False
    return nc


async def _cancel_until_done(task: asyncio.Task[NATS]) -> None:
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if not task.cancelled():
        task.exception()  # retrieved: a failed attempt is said in the one line, not logged by asyncio


async def reach_redis(settings: Settings, deadline_s: float) -> ProjectionsClient:
    """A Redis client that has answered a PING within `deadline_s`, or Unreachable; in cluster mode,
    SettingsError when the listed nodes are not one whole cluster."""
    await check_cluster(settings)
    client = connect(settings)
    loop = asyncio.get_running_loop()
    until = loop.time() + deadline_s
    delay = FIRST_DELAY_S
    while True:
        try:
            async with asyncio.timeout(max(0.1, until - loop.time())):
                await client.ping()
            return client
        except REDIS_DOWN as exc:
            if loop.time() + delay >= until:
                await client.aclose()
                raise Unreachable(_line("Redis", settings.redis_url, deadline_s, exc)) from None
        except redis.exceptions.RedisError as exc:  # the wrong password, a missing permission
            await client.aclose()
            raise Unreachable(f"Redis at {redacted(settings.redis_url)} refused us: {reason(exc)}") from None
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_DELAY_S)


async def keep_reaching_nats(settings: Settings, name: str, deadline_s: float) -> NATS:
    """For the long-running `run`: retried with backoff until NATS answers, one WARNING per try."""
    return await _keep_trying(lambda: reach_nats(settings, name, deadline_s))


async def keep_reaching_redis(settings: Settings, deadline_s: float) -> ProjectionsClient:
    """For the long-running `run`: retried with backoff until Redis answers, one WARNING per try."""
    return await _keep_trying(lambda: reach_redis(settings, deadline_s))


async def _keep_trying(reach: Callable[[], Awaitable[T]]) -> T:
    """`reach()` again after each Unreachable, with backoff, logging its one line as a WARNING (not
    `with_backoff`, whose line names the dependency again around the reason)."""
    delay = FIRST_DELAY_S
    while True:
        try:
            return await reach()
        except Unreachable as exc:
            log.warning("%s; retrying in %.1fs", exc.line, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_DELAY_S)


def _line(what: str, url: str, deadline_s: float, exc: BaseException) -> str:
    return f"cannot reach {what} at {redacted(url)} within {deadline_s:g}s ({reason(exc)}): {HINT}"
