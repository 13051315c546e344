"""The baseline for `./just bench`: bare Litestar on the same server, parsing the same query, no I/O."""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Request, Response, get, post

from contract.hours import system_now_ms
from ingest.validation import parse_event

BODY = b"unique_users,0\nclicks,0\nimpressions,0\n"


@post("/analytics", status_code=204)
async def post_analytics(request: Request[Any, Any, Any]) -> Response[None]:
    parse_event(request.scope["query_string"], now_ms=system_now_ms(), future_skew_ms=86_400_000)
    return Response(content=None, status_code=204)


@get("/analytics")
async def get_analytics() -> Response[bytes]:
    return Response(content=BODY, media_type="text/plain")


def create_bare_app() -> Litestar:
    return Litestar(route_handlers=[post_analytics, get_analytics], openapi_config=None, debug=False)
