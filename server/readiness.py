"""What `/readyz` answers (NATS, the stream, Redis and the projectors) and `/readyz/ingest` answers (NATS and
the stream only: what a POST needs), as refreshed in the background.

A probe reads the last refresh instead of calling JetStream and Redis itself, so probes cost nothing and
a hung dependency shows up as a stale refresh rather than a hung probe. NATS and Redis are checked side by
side, each under its own timeout, so a hung Redis never makes the ingest answer fail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from contract.hours import system_now_ms
from contract.keys import Keys
from contract.stream import partition_mismatch
from deploy.projections_client import ProjectionsClient
from deploy.settings import Settings

REFRESH_S = 1.0
"""How often the state is refreshed; a refresh older than three of these counts as a failure."""


@dataclass
class Readiness:
    settings: Settings
    nc: Callable[[], NATS | None]
    redis: Callable[[], ProjectionsClient | None]
    clock: Callable[[], int] = system_now_ms
    problems: list[str] = field(default_factory=lambda: ["starting: not checked yet"])
    ingest_problems: list[str] = field(default_factory=lambda: ["starting: not checked yet"])
    """The part of `problems` that stops a POST: NATS and the stream."""
    refused: str | None = None
    """Set when the stream was made for another partition count: this process must not publish."""
    checked_at: float = 0.0
    stopped: bool = False

    def current(self) -> list[str]:
        """Everything that is wrong (`/readyz`): for people, `./just up` and alerts."""
        return self._with_live(self.problems)

    def ingest(self) -> list[str]:
        """What stops this process taking POSTs (`/readyz/ingest`): for balancers and readiness probes,
        which must not take every HTTP server out because Redis or the projectors are down."""
        return self._with_live(self.ingest_problems)

    def _with_live(self, problems: list[str]) -> list[str]:
        nc = self.nc()
        live = [] if nc is not None and nc.is_connected else ["nats: not connected"]
        if time.monotonic() - self.checked_at > 3 * REFRESH_S and self.checked_at:
            live.append(
                f"checks: last refresh {time.monotonic() - self.checked_at:.1f}s ago (hung dependency?)"
            )
        return live + [p for p in problems if not (live and p.startswith("nats:"))]

    async def run(self) -> None:
        # Ended by `stopped` as well as by cancelling: Python 3.11's wait_for returns the check's
        # result instead of raising when it is cancelled just as the check finishes, and a loop that
        # only a cancellation could end would then run on, with a shutdown waiting for it forever.
        # (asyncio.timeout does not swallow it, but then a client library that turns a cancellation
        # into its own error would.)
        while not self.stopped:
            try:  # each dependency has its own shorter timeout (`_timed`); this one is a safety net
                self.problems = await asyncio.wait_for(self.check(), 2 * REFRESH_S)
            except TimeoutError:
                self.problems = [f"checks: no answer within {2 * REFRESH_S:.0f}s (a dependency hangs)"]
                self.ingest_problems = self.problems
            except Exception as exc:
                self.problems = [f"checks: {type(exc).__name__} {exc}"]
                self.ingest_problems = self.problems
            self.checked_at = time.monotonic()
            if self.stopped:  # a cancellation swallowed by wait_for: not a second's more sleep
                break
            await asyncio.sleep(REFRESH_S)

    async def check(self) -> list[str]:
        """Every problem; the NATS part is also kept as `ingest_problems`."""
        nats_part, redis_part = await asyncio.gather(
            _timed("nats", self._nats()), _timed("redis", self._redis())
        )
        self.ingest_problems = nats_part
        return nats_part + redis_part

    async def _nats(self) -> list[str]:
        s = self.settings
        nc = self.nc()
        if nc is None or not nc.is_connected:
            return ["nats: not connected"]
        try:
            info = await nc.jetstream(timeout=REFRESH_S).stream_info(s.stream_name)
        except NotFoundError:
            return [f"nats: stream {s.stream_name} does not exist (./just stream creates it)"]
        except Exception as exc:
            return [f"nats: stream {s.stream_name}: {type(exc).__name__} {exc}"]
        self.refused = partition_mismatch(s.stream_name, info.config.metadata, s.partitions)
        return [f"nats: {self.refused}"] if self.refused else []

    async def _redis(self) -> list[str]:
        client = self.redis()
        if client is None:
            return ["redis: not connected"]
        keys = Keys(self.settings.key_prefix)
        parts = range(self.settings.partitions)
        try:
            async with client.pipeline(transaction=False) as pipe:
                pipe.zcount(keys.members, self.clock(), "+inf")
                for p in parts:  # one GET per key: a partition's keys live in its own slot
                    pipe.get(keys.generation(p))
                    pipe.get(keys.trouble(p))
                projectors, *found = await pipe.execute()
            trouble = found[1::2]
            async with client.pipeline(transaction=False) as pipe:
                for p, raw_gen in zip(parts, found[0::2], strict=True):
                    pipe.get(keys.gap(keys.live_generation(raw_gen), p))
                gaps = await pipe.execute()
        except Exception as exc:
            return [f"redis: {type(exc).__name__} {exc}"]
        problems = [] if projectors else ["projector: none is running (no heartbeat within its lease)"]
        for p, why in enumerate(trouble):
            if why is not None:
                problems.append(f"projector: partition {p} {_text(why)}")
        for p, why in enumerate(gaps):
            if why is not None:
                problems.append(f"projector: partition {p}: {_text(why)}")
        return problems


async def _timed(what: str, checking: Coroutine[Any, Any, list[str]]) -> list[str]:
    # 1.5 refreshes: a refresh then ends well within the 3 that `_with_live` calls stale, even with one
    # dependency hanging, so a hung Redis cannot make the ingest answer flicker.
    try:
        return await asyncio.wait_for(checking, 1.5 * REFRESH_S)
    except TimeoutError:
        return [f"{what}: no answer within {1.5 * REFRESH_S:g}s (it hangs)"]


def _text(raw: bytes | str) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else raw
