"""The live hub's rules: pushes coalesced, only for the current hour, slots bounded and given back."""

from __future__ import annotations

import asyncio

import pytest

from api.live import Full, LiveHub
from contract.hours import HOUR_MS

NOW = 1000 * HOUR_MS + 5


async def view(hour: int) -> bytes:
    return b'{"hour":%d}' % hour


async def test_after_a_push_a_stream_ignores_changes_for_its_minimum_interval() -> None:
    # An interval longer than the test: exactly one push however many notices come, on any machine.
    hub = LiveHub(view, lambda: NOW, heartbeat_s=60, min_interval_s=60)
    events = hub.subscribe()
    assert await anext(events) == b"retry: 2000\n\n"
    assert await anext(events) == b'data: {"hour":1000}\n\n'
    pushed: list[bytes] = []
    first = asyncio.Event()

    async def read() -> None:
        async for chunk in events:
            pushed.append(chunk)
            first.set()

    reader = asyncio.create_task(read())
    hub.changed([1000])
    await asyncio.wait_for(first.wait(), 2)
    for _ in range(50):
        hub.changed([1000])
        await asyncio.sleep(0)
    hub.close()
    await asyncio.wait_for(reader, 2)
    assert pushed == [b'data: {"hour":1000}\n\n']


async def test_other_hours_wake_nobody_and_slots_are_bounded() -> None:
    hub = LiveHub(view, lambda: NOW, max_subscribers=1, heartbeat_s=0.05)
    events = hub.subscribe()
    with pytest.raises(Full):
        hub.subscribe()
    await anext(events)
    await anext(events)
    hub.changed([999])  # not the current hour
    assert await asyncio.wait_for(anext(events), 1) == b": heartbeat\n\n"
    await events.aclose()  # type: ignore[attr-defined]
    assert hub.subscribers == 0
    hub.subscribe()  # the slot was given back


async def test_a_new_hour_is_pushed_when_it_starts() -> None:
    now = [NOW]
    hub = LiveHub(view, lambda: now[0], heartbeat_s=60)
    events = hub.subscribe()
    await anext(events)
    assert await anext(events) == b'data: {"hour":1000}\n\n'
    now[0] = 1001 * HOUR_MS  # the clock passes the hour while the stream waits
    assert await asyncio.wait_for(anext(events), 1) == b'data: {"hour":1001}\n\n'
    await events.aclose()  # type: ignore[attr-defined]
