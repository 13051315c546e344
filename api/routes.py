"""HTTP handler of the read side: GET /analytics answers one UTC hour's totals."""

from __future__ import annotations

from typing import Any

import msgspec
import redis.exceptions
from litestar import Request, Response, get
from litestar.handlers import HTTPRouteHandler

from api.reader import HourTotals, Reader
from contract.errors import Unavailable
from contract.hours import hour_end, hour_of, hour_start
from contract.params import parse_query, parse_timestamp

TEXT = "text/plain"


class HourJSON(msgspec.Struct, frozen=True):
    hour_start: str
    hour_end: str
    unique_users: int
    clicks: int
    impressions: int


class Api:
    """The GET route; `reader` is attached by the app's lifespan once Redis is connected."""

    def __init__(self) -> None:
        self.reader: Reader | None = None

    async def totals(self, hour: int) -> HourTotals:
        if self.reader is None:
            raise Unavailable("Redis", "not connected yet")
        try:
            return await self.reader.hour(hour)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            raise Unavailable("Redis", f"{type(exc).__name__}: {exc}") from exc

    def route(self) -> HTTPRouteHandler:
        @get("/analytics")
        async def get_analytics(request: Request[Any, Any, Any]) -> Response[bytes]:
            hour = hour_of(parse_timestamp(parse_query(request.scope["query_string"])))
            totals = await self.totals(hour)
            if "application/json" in request.headers.get("accept", ""):
                body = msgspec.json.encode(
                    HourJSON(
                        hour_start=_iso(hour_start(hour).isoformat()),
                        hour_end=_iso(hour_end(hour).isoformat()),
                        unique_users=totals.unique_users,
                        clicks=totals.clicks,
                        impressions=totals.impressions,
                    )
                )
                return Response(content=body, media_type="application/json")
            body = (
                f"unique_users,{totals.unique_users}\n"
                f"clicks,{totals.clicks}\n"
                f"impressions,{totals.impressions}\n"
            ).encode()
            return Response(content=body, media_type=TEXT)

        return get_analytics


def _iso(value: str) -> str:
    return value.replace("+00:00", "Z")
