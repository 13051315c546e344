"""The per-worker hour cache, with an in-memory fetch and a hand-driven clock."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from api.cache import HourCache, View
from api.reader import HourTotals
from server.failures import ParamError
from server.params import parse_query, parse_timestamp, timestamp_only


class Source:
    def __init__(self) -> None:
        self.clicks = 0
        self.fetches = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def fetch(self, hour: int) -> HourTotals:
        self.fetches += 1
        clicks = self.clicks
        await self.gate.wait()
        return HourTotals(unique_users=1, clicks=clicks, impressions=hour)


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_concurrent_reads_of_a_cold_hour_share_one_fetch() -> None:
    source = Source()
    cache = HourCache(source.fetch, staleness_s=1.0)
    views = await asyncio.gather(*(cache.view(5) for _ in range(20)))
    assert source.fetches == 1
    assert {v.totals for v in views} == {HourTotals(1, 0, 5)}


async def test_a_view_is_served_from_memory_only_within_the_staleness_bound() -> None:
    source, clock = Source(), Clock()
    cache = HourCache(source.fetch, staleness_s=1.0, clock=clock)
    await cache.view(1)
    source.clicks = 7
    clock.now += 0.9
    assert (await cache.view(1)).totals.clicks == 0
    clock.now += 0.2
    assert (await cache.view(1)).totals.clicks == 7
    assert source.fetches == 2


async def test_a_change_notice_refreshes_a_cached_hour_in_the_background() -> None:
    source = Source()
    cache = HourCache(source.fetch, staleness_s=60)
    await cache.view(1)
    source.clicks = 3
    cache.changed([1, 2])  # hour 2 is not cached: nothing to do for it
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert (await cache.view(1)).totals.clicks == 3
    assert source.fetches == 2


async def test_a_change_during_a_load_triggers_one_more_load() -> None:
    source = Source()
    cache = HourCache(source.fetch, staleness_s=60)
    await cache.view(1)
    source.gate.clear()
    cache.changed(None)
    await asyncio.sleep(0)
    source.clicks = 9  # lands after the first refresh read Redis
    cache.changed(None)
    source.gate.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert (await cache.view(1)).totals.clicks == 9


async def test_a_failed_refresh_reaches_the_readers_and_the_next_read_tries_again() -> None:
    calls = 0

    async def flaky(hour: int) -> HourTotals:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("down")
        return HourTotals(0, 0, 0)

    cache = HourCache(flaky, staleness_s=1)
    try:
        await cache.view(1)
        raise AssertionError("expected the fetch error")
    except ConnectionError:
        pass
    assert (await cache.view(1)).totals == HourTotals(0, 0, 0)


def test_views_render_the_contract_text_and_distinct_etags() -> None:
    view = View.of(0, HourTotals(2, 3, 4))
    assert view.text == b"unique_users,2\nclicks,3\nimpressions,4\n"
    assert view.etag_text != view.etag_json
    assert View.of(0, HourTotals(2, 3, 5)).etag_text != view.etag_text


@given(st.binary(max_size=40) | st.from_regex(rb"\Atimestamp=[0-9]{0,25}\Z"))
def test_the_timestamp_fast_path_agrees_with_the_full_parser(raw: bytes) -> None:
    fast = timestamp_only(raw)
    if fast is None:
        return
    try:
        assert parse_timestamp(parse_query(raw)) == fast
    except ParamError as exc:
        raise AssertionError(f"fast path accepted {raw!r} that the parser refuses: {exc}") from exc
