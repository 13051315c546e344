"""A load driver for fault tests: every event has its own Idempotency-Key and is retried until a 204."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import httpx

from contract.hours import HOUR_MS
from tests.helpers import eventually
from tests.integration.workload import Truth, mixed_events, parse_text, post_path


@dataclass
class Tally:
    events: int = 0
    """Distinct events, each with its own key: what the counts must converge to."""
    acked: int = 0
    """204s, including those of deliberate and retried duplicates."""
    unavailable: int = 0
    """503s (each followed by a retry with the same key)."""
    transport_errors: int = 0
    """Requests that got no answer at all (server process gone), also retried."""
    duplicates: int = 0
    """Events sent again on purpose after their 204, with the same key."""
    done: int = 0
    truth: Truth = field(default_factory=Truth)

    def report(self) -> str:
        return (
            f"events={self.events} 204s={self.acked} 503s={self.unavailable} "
            f"no-answer={self.transport_errors} deliberate-duplicates={self.duplicates}"
        )


async def post_until_stored(
    http: httpx.AsyncClient, path: str, key: str, tally: Tally, deadline: float
) -> None:
    backoff = 0.05
    while True:
        try:
            response = await http.post(path, headers={"Idempotency-Key": key})
            if response.status_code == 204:
                tally.acked += 1
                return
            assert response.status_code == 503, (response.status_code, response.text)
            assert response.headers.get("retry-after")
            tally.unavailable += 1
        except httpx.TransportError:
            tally.transport_errors += 1
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} not stored before the deadline; {tally.report()}")
        await asyncio.sleep(backoff)  # a client's retry backoff, not a wait for consistency
        backoff = min(backoff * 2, 0.5)


async def drive(
    http: httpx.AsyncClient,
    now_ms: int,
    n: int,
    concurrency: int = 8,
    duplicate_every: int = 0,
    seed: int = 21,
    timeout: float = 120.0,
    tally: Tally | None = None,
    until: asyncio.Event | None = None,
) -> Tally:
    """Send up to `n` events (95% current hour), every `duplicate_every`-th one twice on purpose.

    With `until`, stop taking new events once it is set (events in flight still finish).
    """
    tally = Tally() if tally is None else tally
    pending = iter(enumerate(mixed_events(now_ms, n, seed)))
    deadline = time.monotonic() + timeout

    async def worker() -> None:
        for i, (ts, user, kind) in pending:
            if until is not None and until.is_set():
                return
            tally.events += 1
            tally.truth.add(ts, user, kind)
            key = f"ev-{seed}-{i}"
            await post_until_stored(http, post_path(ts, user, kind), key, tally, deadline)
            if duplicate_every and i % duplicate_every == 0:
                tally.duplicates += 1
                await post_until_stored(http, post_path(ts, user, kind), key, tally, deadline)
            tally.done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tally


async def wait_until_done(tally: Tally, at_least: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while tally.done < at_least:
        if time.monotonic() > deadline:
            raise AssertionError(f"load stalled at {tally.done} events; {tally.report()}")
        await asyncio.sleep(0.01)


@dataclass
class ClosedHour:
    """An hour nobody writes to while a fault runs: its counts are settled before the fault, so every
    200 answer for it during and after the fault must be exactly those (a promoted stale replica, a
    slot half moved or a swap half done would show fewer, or none)."""

    timestamp: int
    counts: tuple[int, int, int]
    wrong: list[tuple[int, int, int]] = field(default_factory=list)

    @classmethod
    async def written(cls, http: httpx.AsyncClient, hour: int, events: int = 40) -> ClosedHour:
        at = hour * HOUR_MS
        for i in range(events):
            kind = "click" if i % 2 else "impression"
            response = await http.post(post_path(at + i, f"closed-{hour}-{i}", kind))
            assert response.status_code == 204, response.text
        expected = (events // 2, events - events // 2)
        answer = await eventually(
            lambda: _counts(http, at), lambda got: got is not None and got[1:] == expected
        )
        assert answer is not None
        return cls(at, answer)

    async def check(self, http: httpx.AsyncClient) -> httpx.Response | None:
        """GET the hour once; remember a 200 whose counts differ. Returns the answer (None: none came)."""
        try:
            response = await http.get("/analytics", params={"timestamp": self.timestamp})
        except httpx.TransportError:
            return None
        if response.status_code == 200 and (got := parse_text(response.text)) != self.counts:
            self.wrong.append(got)
        return response


async def _counts(http: httpx.AsyncClient, at: int) -> tuple[int, int, int] | None:
    response = await http.get("/analytics", params={"timestamp": at})
    return parse_text(response.text) if response.status_code == 200 else None
