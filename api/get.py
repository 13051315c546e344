"""GET /analytics, whichever path it comes by: one hour's totals from the hour cache, or a range (also
at GET /analytics/range, the range's documented path)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import redis.exceptions
from litestar.exceptions import NotAuthorizedException

from api.cache import HourCache, cache_control
from api.ranges import RangeQuery, Row, parse_range, parse_read, render_csv, render_json
from api.reader import HourTotals
from api.tokens import ReadTokens
from contract.hours import hour_of
from server.answer import CSV, JSON, Answer
from server.failures import Unavailable
from server.params import parse_query

ReadBuckets = Callable[[Sequence[tuple[int, int]]], Awaitable[tuple[list[HourTotals], HourTotals]]]
"""Each row's totals and the range's, rows given as [start, end) in ms (api.range_read)."""
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
    ) -> None:
        """`hours` and `buckets` read Redis (or raise Unavailable while it is not connected);
        `answered` counts GET /analytics's answers, `range_answered` GET /analytics/range's."""
        self._hours = hours
        self._buckets = buckets
        self._max_buckets = max_buckets
        self._tokens = tokens if tokens is not None and tokens.required else None
        self._answered = answered
        self._range_answered = range_answered
        self._cache_control = cache_control(staleness_s)
        self.cache = HourCache(self._fetch, staleness_s)

    async def answer(self, scope: Any) -> Answer:
        headers = scope["headers"]
        if self._tokens is not None:
            self.authorize(headers)
        asked = parse_read(scope["query_string"], self._max_buckets)
        if isinstance(asked, RangeQuery):
            return await self._range(asked, headers, self._answered)
        view = await self.cache.view(hour_of(asked))
        wants_json, if_none_match = _negotiation(headers)
        rendering = view.as_json if wants_json else view.as_text
        if if_none_match is not None and rendering.etag in if_none_match:
            self._answered(304)
            return rendering.not_modified
        self._answered(200)
        return rendering.ok

    async def range_answer(self, scope: Any) -> Answer:
        """GET /analytics/range: `from`, `to`, `granularity` and `tz`, nothing else."""
        headers = scope["headers"]
        if self._tokens is not None:
            self.authorize(headers)
        asked = parse_range(parse_query(scope["query_string"]), self._max_buckets)
        return await self._range(asked, headers, self._range_answered)

    def authorize(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """401 unless read tokens are off or the request carries one."""
        if self._tokens is not None and not self._tokens.allow(_authorization(headers)):
            raise NotAuthorizedException(
                detail="a read token is required: send Authorization: Bearer <token>",
                headers={"WWW-Authenticate": 'Bearer realm="hourglass"'},
            )

    def answered(self, status: int) -> None:
        self._answered(status)

    async def latest_json(self, hour: int) -> bytes:
        """The hour's JSON, waiting for a refresh a change notice started (what a live push sends)."""
        return (await self.cache.latest(hour)).json

    async def _fetch(self, hour: int) -> HourTotals:
        try:
            return await self._hours(hour)
        except REDIS_ERRORS as exc:
            raise Unavailable("Redis", f"{type(exc).__name__}: {exc}") from exc

    async def _range(
        self, q: RangeQuery, headers: Iterable[tuple[bytes, bytes]], answered: Callable[[int], None]
    ) -> Answer:
        rows: list[Row] = []
        whole: Row = (0, 0, 0)
        if q.spans:  # an empty range has nothing to read
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
