"""HTTP handler of range reads: GET /analytics/range, the documented path for what
`GET /analytics?from=&to=` also answers (kept for older clients), through the same range code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import HttpMethod, Request, Response, route
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import Operation

from api.routes import Api
from contract.params import parse_query


def range_route(
    api: Api, answered: Callable[[int], None] | None = None, operation_class: type[Operation] = Operation
) -> HTTPRouteHandler:
    """`answered(status)` counts this route's answers (the `/analytics` route's counter by default)."""

    @route("/analytics/range", http_method=[HttpMethod.GET, HttpMethod.HEAD], operation_class=operation_class)
    async def get_range(request: Request[Any, Any, Any]) -> Response[bytes]:
        if api.tokens is not None:
            api._authorize(request.scope["headers"])
        query = parse_query(request.scope["query_string"])
        return await api._range(query, request, api._cache_control, answered)

    return get_range
