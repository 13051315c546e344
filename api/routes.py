"""HTTP handler of the read side: GET /analytics answers one UTC hour's totals, from the hour cache."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import redis.exceptions
from litestar import HttpMethod, Request, Response, get, route
from litestar.exceptions import NotAuthorizedException, ServiceUnavailableException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import Operation
from litestar.response import Stream

from api.cache import HourCache, cache_control
from api.live import Full, LiveHub
from api.ranges import parse_range, render_csv, render_json
from api.reader import HourTotals
from api.tokens import ReadTokens
from contract.errors import Unavailable
from contract.hours import hour_of
from contract.params import parse_query, parse_timestamp, timestamp_only

TEXT = "text/plain"
CSV = "text/csv"
JSON = "application/json"

EMPTY_BODY: dict[str, Any] = {"type": "http.response.body", "body": b"", "more_body": False}

ReadBuckets = Callable[[Sequence[Sequence[int]]], Awaitable[tuple[list[HourTotals], HourTotals]]]


class Api:
    """The GET route; `read` (Redis in production) is attached by the app's lifespan."""

    def __init__(
        self,
        staleness_s: float,
        answered: Callable[[int], None] = lambda _: None,
        max_buckets: int = 8784,
        tokens: ReadTokens | None = None,
    ) -> None:
        self.answered = answered
        self.tokens = tokens if tokens is not None and tokens.required else None
        self.max_buckets = max_buckets
        self.read: Callable[[int], Awaitable[HourTotals]] | None = None
        self.read_buckets: ReadBuckets | None = None
        self.cache = HourCache(self._fetch, staleness_s)
        self._cache_control = cache_control(staleness_s)

    async def _fetch(self, hour: int) -> HourTotals:
        if self.read is None:
            raise Unavailable("Redis", "not connected yet")
        try:
            return await self.read(hour)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            raise Unavailable("Redis", f"{type(exc).__name__}: {exc}") from exc

    def live_route(self, hub: LiveHub) -> HTTPRouteHandler:
        """`GET /analytics/live`: Server-Sent Events of the current hour (not in the OpenAPI document:
        a stream that never ends is no request/response pair)."""

        @get("/analytics/live", include_in_schema=False)
        async def live(request: Request[Any, Any, Any]) -> Stream:
            if self.tokens is not None:
                self._authorize(request.scope["headers"])
            try:
                events = hub.subscribe()
            except Full:
                raise ServiceUnavailableException(
                    detail=f"this worker already serves {hub.max_subscribers} live streams; retry later",
                    headers={"Retry-After": "5"},
                ) from None
            self.answered(200)
            return Stream(
                events,
                media_type="text/event-stream",
                headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
            )

        return live

    def route(self, operation_class: type[Operation] = Operation) -> HTTPRouteHandler:
        cache_control = self._cache_control

        @route("/analytics", http_method=[HttpMethod.GET, HttpMethod.HEAD], operation_class=operation_class)
        async def get_analytics(request: Request[Any, Any, Any]) -> Response[bytes]:
            if self.tokens is not None:
                self._authorize(request.scope["headers"])
            raw = request.scope["query_string"]
            ts = timestamp_only(raw)
            if ts is None:
                query = parse_query(raw)
                if "from" in query or "to" in query:
                    return await self._range(query, request, cache_control)
                ts = parse_timestamp(query)
            view = await self.cache.view(hour_of(ts))
            wants_json, if_none_match = _negotiation(request.scope["headers"])
            body, etag, media = (
                (view.json, view.etag_json, JSON) if wants_json else (view.text, view.etag_text, TEXT)
            )
            headers = {"etag": etag, "cache-control": cache_control, "vary": "Accept"}
            if if_none_match is not None and etag in if_none_match:
                self.answered(304)
                return Response(content=b"", status_code=304, headers=headers)
            self.answered(200)
            return Response(content=body, media_type=media, headers=headers)

        return get_analytics

    async def plain_answer(self, scope: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The ASGI messages answering a plain GET of one hour (the fast path), from the cache; None
        sends the request to the full route, which answers anything else (errors included)."""
        headers = scope["headers"]
        if self.tokens is not None and not self.tokens.allow(_authorization(headers)):
            return None
        ts = timestamp_only(scope["query_string"])
        if ts is None:
            return None
        try:
            view = await self.cache.view(hour_of(ts))
        except Exception:
            return None  # the full route reads again and answers the error
        wants_json, if_none_match = _negotiation(headers)
        raw = view.raw_json if wants_json else view.raw_text
        if if_none_match is not None and raw.etag in if_none_match:
            self.answered(304)
            return raw.not_modified_start, EMPTY_BODY
        self.answered(200)
        return raw.ok_start, raw.ok_body

    def _authorize(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        assert self.tokens is not None
        if not self.tokens.allow(_authorization(headers)):
            raise NotAuthorizedException(
                detail="a read token is required: send Authorization: Bearer <token>",
                headers={"WWW-Authenticate": 'Bearer realm="hourglass"'},
            )

    async def _range(
        self,
        query: dict[str, list[str]],
        request: Request[Any, Any, Any],
        cache_control: str,
        answered: Callable[[int], None] | None = None,
    ) -> Response[bytes]:
        q = parse_range(query, self.max_buckets)
        if self.read_buckets is None:
            raise Unavailable("Redis", "not connected yet")
        try:
            found, total = await self.read_buckets(q.buckets)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            raise Unavailable("Redis", f"{type(exc).__name__}: {exc}") from exc
        rows = [(t.unique_users, t.clicks, t.impressions) for t in found]
        whole = (total.unique_users, total.clicks, total.impressions)
        wants_json, _ = _negotiation(request.scope["headers"])
        body, media = (render_json(q, rows, whole), JSON) if wants_json else (render_csv(q, rows, whole), CSV)
        (answered or self.answered)(200)
        return Response(
            content=body, media_type=media, headers={"cache-control": cache_control, "vary": "Accept"}
        )


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
