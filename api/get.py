"""GET /analytics, whichever path it comes by: one hour's totals from the hour cache, or a range (also
at GET /analytics/range, the range's documented path)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import Any, TypeVar

import redis.exceptions
from litestar.exceptions import ClientException, NotAuthorizedException

from api.breakdown import (
    BreakdownQuery,
    Filter,
    Filtered,
    Sort,
    chosen,
    parse_breakdown,
    parse_filter,
    value_axes,
)
from api.breakdown import render_csv as render_breakdown_csv
from api.breakdown import render_json as render_breakdown_json
from api.cache import HourCache, View, cache_control
from api.ranges import FilteredRange, RangeQuery, Row, parse_range_read, parse_read, render_csv, render_json
from api.reader import HourTotals, NotKept
from api.tokens import ReadTokens
from contract.cells import NONE, OTHER
from contract.hours import HOUR_MS, hour_of, hour_token
from server.answer import CSV, JSON, Answer
from server.failures import Unavailable
from server.params import parse_query

_H = TypeVar("_H")
_T = TypeVar("_T")
_R = TypeVar("_R")

ReadBuckets = Callable[[Sequence[tuple[int, int]]], Awaitable[tuple[list[HourTotals], HourTotals]]]
"""Each row's totals and the range's, rows given as [start, end) in ms (api.range_read)."""
AxisCounts = Callable[[Sequence[str], str], Awaitable[dict[str, tuple[int, int]]]]
"""Every axis starting with a prefix some cells have (hour and quarter-hour tokens), with its clicks
and impressions (api.reader)."""
AxisTotals = Callable[[Sequence[str], Sequence[str]], Awaitable[list[HourTotals]]]
"""Each axis's totals over some cells (api.reader)."""
AxisRows = Callable[[Sequence[Sequence[str]], str], Awaitable[list[HourTotals]]]
"""One axis's totals in each bucket of cells (api.reader)."""
REDIS_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
    # A cluster between states: a slot moving or a shard failing over (CLUSTERDOWN, TRYAGAIN,
    # MASTERDOWN), a node still loading its data, or no node reachable to learn the slots from.
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.MasterDownError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.RedisClusterException,
)
"""What a read answers 503 (with Retry-After) for: Redis is unavailable for now, not wrong."""


class Reads:
    """Answers a GET from its ASGI scope; raises what the error renderer turns into 400, 401 or 503."""

    def __init__(
        self,
        staleness_s: float,
        hours: Callable[[int], Awaitable[HourTotals]],
        buckets: ReadBuckets,
        max_buckets: int = 8784,
        tokens: ReadTokens | None = None,
        answered: Callable[[int], None] = lambda _: None,
        range_answered: Callable[[int], None] = lambda _: None,
        *,
        dimensions: frozenset[str] = frozenset(),
        pairs: frozenset[tuple[str, str]] = frozenset(),
        split: frozenset[int] = frozenset(),
        axis_counts: AxisCounts | None = None,
        axis_totals: AxisTotals | None = None,
        axis_rows: AxisRows | None = None,
        breakdown_answered: Callable[[int], None] = lambda _: None,
    ) -> None:
        """`hours`, `buckets` and the axis reads read Redis (or raise Unavailable while it is not
        connected); `answered` counts GET /analytics's answers, `range_answered` GET /analytics/range's
        and `breakdown_answered` GET /analytics/breakdown's."""
        self._hours = hours
        self._dimensions = dimensions
        self._pairs = pairs
        self._split = split
        self._axis_counts = axis_counts
        self._axis_totals = axis_totals
        self._axis_rows = axis_rows
        self._breakdown_answered = breakdown_answered
        self._buckets = buckets
        self._max_buckets = max_buckets
        self._tokens = tokens if tokens is not None and tokens.required else None
        self._answered = answered
        self._range_answered = range_answered
        self._staleness_s = staleness_s
        self._cache_control = cache_control(staleness_s)
        self.cache = HourCache(self._fetch, staleness_s)

    async def answer(self, scope: Any) -> Answer:
        headers = scope["headers"]
        if self._tokens is not None:
            self.authorize(headers)
        asked = parse_read(scope["query_string"], self._max_buckets, self._dimensions, self._split)
        if isinstance(asked, RangeQuery | FilteredRange):
            return await self._range(asked, headers, self._answered)
        if isinstance(asked, Filtered):
            hour = hour_of(asked.timestamp)
            (totals,) = await self._axes(self._axis_totals, [hour_token(hour)], [asked.only.axis])
            view = View.of(hour, totals, self._staleness_s)
        else:
            view = await self.cache.view(hour_of(asked))
        wants_json, if_none_match = _negotiation(headers)
        rendering = view.as_json if wants_json else view.as_text
        if if_none_match is not None and rendering.etag in if_none_match:
            self._answered(304)
            return rendering.not_modified
        self._answered(200)
        return rendering.ok

    async def range_answer(self, scope: Any) -> Answer:
        """GET /analytics/range: `from`, `to`, `granularity`, `tz` and a filter."""
        headers = scope["headers"]
        if self._tokens is not None:
            self.authorize(headers)
        query = parse_query(scope["query_string"])
        asked = parse_range_read(query, self._max_buckets, self._dimensions, self._split)
        return await self._range(asked, headers, self._range_answered)

    async def breakdown_answer(self, scope: Any) -> Answer:
        """GET /analytics/breakdown: one hour's rows per value of a dimension (api.breakdown)."""
        headers = scope["headers"]
        if self._tokens is not None:
            self.authorize(headers)
        query = parse_query(scope["query_string"])
        q = parse_breakdown(query, self._dimensions, self._pairs, self._split)
        cells = list(q.cells)
        rows: list[tuple[str, Row]] = [(NONE, (0, 0, 0)), (OTHER, (0, 0, 0))]
        whole: Row = (0, 0, 0)
        if q.span is not None:
            rows = await self._breakdown_rows(q, cells)
            if q.within is not None:
                (total,) = await self._axes(self._axis_totals, cells, [q.within.axis])
            elif q.one_hour:
                total = await self._fetch(q.span[0] // HOUR_MS)
            else:
                try:
                    _, total = await self._buckets([q.span])
                except REDIS_ERRORS as exc:
                    raise Unavailable("Redis", f"{type(exc).__name__}: {exc}") from exc
            whole = (total.unique_users, total.clicks, total.impressions)
        wants_json, _ = _negotiation(headers)
        if wants_json:
            body, media = render_breakdown_json(q, rows, whole), JSON
        else:
            body, media = render_breakdown_csv(q, rows, whole), CSV
        self._breakdown_answered(200)
        return Answer.of(200, body, media, {"cache-control": self._cache_control, "vary": "Accept"})

    async def _breakdown_rows(self, q: BreakdownQuery, hours: list[str]) -> list[tuple[str, Row]]:
        """The values shown (the `top` by the sort), then (none) and (other), over the hours."""
        prefix = q.axis("")
        counts = await self._axes(self._axis_counts, hours, prefix)
        values = {axis[len(prefix) :]: c for axis, c in counts.items()}
        values = {v: c for v, c in values.items() if v not in (NONE, OTHER)}
        if q.sort is Sort.UNIQUE_USERS:
            every = sorted(values)
            found = await self._axes(self._axis_totals, hours, [q.axis(v) for v in every])
            shown = chosen(q, values, {v: t.unique_users for v, t in zip(every, found, strict=True)})
        else:
            shown = chosen(q, values)
        found = await self._axes(self._axis_totals, hours, value_axes(q, shown))
        names = [*shown, NONE, OTHER]
        return [
            (name, (t.unique_users, t.clicks, t.impressions)) for name, t in zip(names, found, strict=True)
        ]

    async def _axes(self, read: Callable[[_H, _T], Awaitable[_R]] | None, hours: _H, what: _T) -> _R:
        """An axis read of the hours; 409 when an hour's axis cells are not kept, 503 when Redis is down."""
        if read is None:
            raise Unavailable("Redis", "breakdowns are not connected")
        try:
            return await read(hours, what)
        except NotKept as exc:
            raise ClientException(status_code=409, detail=f"no breakdowns: {exc}") from None
        except REDIS_ERRORS as exc:
            raise Unavailable("Redis", f"{type(exc).__name__}: {exc}") from exc

    def authorize(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """401 unless read tokens are off or the request carries one."""
        if self._tokens is not None and not self._tokens.allow(_authorization(headers)):
            raise NotAuthorizedException(
                detail="a read token is required: send Authorization: Bearer <token>",
                headers={"WWW-Authenticate": 'Bearer realm="hourglass"'},
            )

    def answered(self, status: int) -> None:
        self._answered(status)

    def live_view(self, query_string: bytes) -> Callable[[int], Awaitable[bytes]] | None:
        """What a live stream of this query pushes: None for the hour's totals (the hub's own view), or
        the JSON of one value's (`/analytics/live?campaign=x`); a bad filter is a ParamError (400)."""
        only = parse_filter(parse_query(query_string), self._dimensions)
        return None if only is None else partial(self.filtered_json, only)

    async def filtered_json(self, only: Filter, hour: int) -> bytes:
        """The JSON of the hour's events with one value (a filtered live push)."""
        (totals,) = await self._axes(self._axis_totals, [hour_token(hour)], [only.axis])
        return View.of(hour, totals, self._staleness_s).json

    async def latest_json(self, hour: int) -> bytes:
        """The hour's JSON, waiting for a refresh a change notice started (what a live push sends)."""
        return (await self.cache.latest(hour)).json

    async def _fetch(self, hour: int) -> HourTotals:
        try:
            return await self._hours(hour)
        except REDIS_ERRORS as exc:
            raise Unavailable("Redis", f"{type(exc).__name__}: {exc}") from exc

    async def _range(
        self,
        asked: RangeQuery | FilteredRange,
        headers: Iterable[tuple[bytes, bytes]],
        answered: Callable[[int], None],
    ) -> Answer:
        q = asked.q if isinstance(asked, FilteredRange) else asked
        rows: list[Row] = []
        whole: Row = (0, 0, 0)
        if q.spans and isinstance(asked, FilteredRange):
            buckets = [list(cells) for cells in asked.cells]
            found = await self._axes(self._axis_rows, buckets, asked.only.axis)
            every = [token for cells in buckets for token in cells]
            (total,) = await self._axes(self._axis_totals, every, [asked.only.axis])
            rows = [(t.unique_users, t.clicks, t.impressions) for t in found]
            whole = (total.unique_users, total.clicks, total.impressions)
        elif q.spans:  # an empty range has nothing to read
            try:
                found, total = await self._buckets(q.spans)
            except REDIS_ERRORS as exc:
                raise Unavailable("Redis", f"{type(exc).__name__}: {exc}") from exc
            rows = [(t.unique_users, t.clicks, t.impressions) for t in found]
            whole = (total.unique_users, total.clicks, total.impressions)
        wants_json, _ = _negotiation(headers)
        body, media = (render_json(q, rows, whole), JSON) if wants_json else (render_csv(q, rows, whole), CSV)
        answered(200)
        return Answer.of(200, body, media, {"cache-control": self._cache_control, "vary": "Accept"})


def _authorization(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    return next((v for k, v in headers if k == b"authorization"), None)


def _negotiation(headers: Iterable[tuple[bytes, bytes]]) -> tuple[bool, str | None]:
    """(client asked for JSON, its If-None-Match) from the raw ASGI headers, in one pass."""
    wants_json, if_none_match = False, None
    for name, value in headers:
        if name == b"accept":
            wants_json = b"application/json" in value
        elif name == b"if-none-match":
            if_none_match = value.decode("latin-1")
    return wants_json, if_none_match
