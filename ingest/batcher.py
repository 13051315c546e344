"""Group commit: events bound for one subject share one stream message and its PubAck.

Each subject keeps a buffer. It is flushed at the end of the event-loop tick in which it started
(plus an optional linger), or at once when full, as long as fewer than `max_in_flight` appends of
that subject await their PubAck; otherwise it keeps filling until one returns. With the defaults (no
linger, one append in flight) the next batch leaves when the previous PubAck returns: under light
load that is one event per message and no added latency; under heavy load batches grow with the load.

Each request awaits a future of its own: a future shared by a batch would be cancelled for all of
them when one waiting request is cancelled, and shielding it costs the same object per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from contract import schema

BATCH_IN_FLIGHT = 8
"""Appends one batch request has awaiting their PubAck at once."""

Send = Callable[[str, bytes], Awaitable[None]]
"""Appends one encoded batch to a subject; returns once stored, raises if not."""


@dataclass
class _Subject:
    buffer: list[tuple[schema.Event, asyncio.Future[None]]] = field(default_factory=list)
    in_flight: int = 0
    timer: asyncio.Handle | asyncio.TimerHandle | None = None


class Batcher:
    def __init__(
        self,
        send: Send,
        max_events: int = 1000,
        linger_s: float = 0.0,
        max_in_flight: int = 1,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self._send = send
        self._max_events = max_events
        self._linger_s = linger_s
        self._max_in_flight = max_in_flight
        self._on_batch = on_batch
        self._subjects: dict[str, _Subject] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, subject: str, event: schema.Event) -> None:
        """Returns once the message holding `event` is stored; raises what the append raised."""
        state = self._subjects.get(subject)
        if state is None:
            state = self._subjects[subject] = _Subject()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        state.buffer.append((event, future))
        if len(state.buffer) >= self._max_events:
            self._flush(subject, state, force=True)
        elif state.timer is None and state.in_flight < self._max_in_flight:
            loop = asyncio.get_running_loop()
            if self._linger_s > 0:
                state.timer = loop.call_later(self._linger_s, self._flush, subject, state)
            else:
                state.timer = loop.call_soon(self._flush, subject, state)
        await future

    async def submit_all(self, items: list[tuple[str, schema.Event]]) -> None:
        """Returns once every (subject, event) of `items` is stored; raises what the first failed append
        raised (others may have been stored). A batch request's events need no company: each subject's
        share goes in messages of its own (at most `max_events` each), appended side by side, without
        a future per event."""
        by_subject: dict[str, list[schema.Event]] = {}
        for subject, event in items:
            by_subject.setdefault(subject, []).append(event)
        size = self._max_events
        gate = asyncio.Semaphore(BATCH_IN_FLIGHT)
        outcomes = await asyncio.gather(
            *(
                self._append_now(gate, subject, events[at : at + size])
                for subject, events in by_subject.items()
                for at in range(0, len(events), size)
            ),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _append_now(self, gate: asyncio.Semaphore, subject: str, events: list[schema.Event]) -> None:
        async with gate:
            started = asyncio.get_running_loop().time()
            await self._send(subject, schema.encode(schema.batch_of(events=tuple(events))))
            if self._on_batch is not None:
                self._on_batch(len(events), asyncio.get_running_loop().time() - started)

    def _flush(self, subject: str, state: _Subject, force: bool = False) -> None:
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        if not state.buffer or (state.in_flight >= self._max_in_flight and not force):
            return
        items, state.buffer = state.buffer, []
        state.in_flight += 1
        task = asyncio.get_running_loop().create_task(self._append(subject, state, items))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _append(
        self, subject: str, state: _Subject, items: list[tuple[schema.Event, asyncio.Future[None]]]
    ) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await self._send(subject, schema.encode(schema.batch_of(events=tuple(e for e, _ in items))))
        except BaseException as exc:
            for _, future in items:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
            if not isinstance(exc, Exception):
                raise
        else:
            for _, future in items:
                if not future.done():
                    future.set_result(None)
            if self._on_batch is not None:
                self._on_batch(len(items), loop.time() - started)
        finally:
            state.in_flight -= 1
            if state.buffer and state.timer is None:
                self._flush(subject, state)
            elif not state.buffer and not state.in_flight and state.timer is None:
                self._subjects.pop(subject, None)  # past hours' subjects should not pile up

    async def close(self) -> None:
        """Flush what is buffered and wait for every append in flight."""
        for subject, state in self._subjects.items():
            self._flush(subject, state, force=True)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
