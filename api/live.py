"""`GET /analytics/live`: the current hour's counts as Server-Sent Events, pushed when projectors
announce that the hour changed, coalesced, with heartbeats; a bounded number of subscribers.

The hub decides what to send and when; Litestar's `ServerSentEventMessage` frames each message (with a
bare LF, `sep="\n"`: the dashboard's reader splits events on a blank LF line), and the route streams the
frames with Litestar's `Stream`. Not its `ServerSentEvent` response: with it, a subscriber slot was once
still taken 5 s after its client had gone (a clean-clone CI run of
`test_live_subscribers_are_bounded_per_worker`), which a `Stream` over this generator never showed in the
sessions before. The likely cause: its wrapper leaves this generator's `finally`, which gives the slot
back, to the garbage collector instead of ending it with the response."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from litestar.response import ServerSentEventMessage

from contract.hours import hour_of

RETRY = ServerSentEventMessage(data=None, retry=2000, sep="\n").encode()
"""First on every stream: a client that loses it reconnects after 2 s."""
HEARTBEAT = ServerSentEventMessage(data=None, comment="heartbeat", sep="\n").encode()


View = Callable[[int], Awaitable[bytes]]
"""What a stream pushes for an hour: its JSON (the hour's totals, or a filter's)."""


class Full(Exception):
    """Every subscriber slot of this worker is taken."""


class LiveHub:
    """Wakes the live streams of this worker when the current hour changes.

    Pushes are coalesced: after one, a stream waits `min_interval_s` before it looks again, so a busy
    hour costs each subscriber at most 1 / min_interval_s pushes a second, whatever the event rate."""

    def __init__(
        self,
        view: View,
        clock: Callable[[], int],
        max_subscribers: int = 100,
        heartbeat_s: float = 15.0,
        min_interval_s: float = 0.25,
    ) -> None:
        self._view = view
        self._clock = clock
        self.max_subscribers = max_subscribers
        self.heartbeat_s = heartbeat_s
        self.min_interval_s = min_interval_s
        self._wakes: set[asyncio.Event] = set()
        self.closing = asyncio.Event()

    @property
    def subscribers(self) -> int:
        return len(self._wakes)

    def changed(self, hours: Iterable[int] | None) -> None:
        """A change notice: wake every stream if it names the current hour (None names every hour)."""
        if hours is not None and hour_of(self._clock()) not in hours:
            return
        for wake in self._wakes:
            wake.set()

    def close(self) -> None:
        """Shutdown: every stream ends after what it is sending now."""
        self.closing.set()
        for wake in self._wakes:
            wake.set()

    def subscribe(self, view: View | None = None) -> AsyncIterator[bytes]:
        """A new stream of `view` (default: the hour's totals), or Full. The slot is taken here, before
        the response starts."""
        if len(self._wakes) >= self.max_subscribers:
            raise Full
        wake = asyncio.Event()
        self._wakes.add(wake)
        return self._stream(wake, view or self._view)

    async def _stream(self, wake: asyncio.Event, view: View) -> AsyncIterator[bytes]:
        try:
            yield RETRY
            hour = hour_of(self._clock())
            yield _event(await view(hour))
            while not self.closing.is_set():
                # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation
                # (a client gone, a shutdown) when the event is set at the same moment.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._until_next(hour)):
                        await wake.wait()
                if self.closing.is_set():
                    return
                now_hour = hour_of(self._clock())
                if not wake.is_set() and now_hour == hour:
                    yield HEARTBEAT
                    continue
                wake.clear()
                hour = now_hour  # a new hour starts at zero: push it too
                yield _event(await view(hour))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.min_interval_s):
                        await self.closing.wait()
        finally:
            self._wakes.discard(wake)

    def _until_next(self, hour: int) -> float:
        """Wait for a change, a heartbeat, or the next hour, whichever comes first."""
        to_next_hour = ((hour + 1) * 3_600_000 - self._clock()) / 1000
        return max(0.001, min(self.heartbeat_s, to_next_hour))


def _event(json: bytes) -> bytes:
    return ServerSentEventMessage(data=json, sep="\n").encode()
