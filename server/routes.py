"""The Litestar handlers: module-level functions that receive the app's `services` as a dependency.

`/analytics` answers come from the same `Ingest` and `Reads` the raw front calls (`server/fast.py`), so
either path sends the same bytes; these handlers also carry the OpenAPI document's operations."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from litestar import HttpMethod, Request, Response, get, post, route
from litestar.di import NamedDependency
from litestar.exceptions import ServiceUnavailableException
from litestar.response import Stream

from api.live import Full
from server import metrics, openapi
from server.errors import Rendered
from server.services import Services

READ_METHODS = [HttpMethod.GET, HttpMethod.HEAD]
ANALYTICS_ALLOW = "GET, HEAD, POST, OPTIONS"
DASHBOARD = files("server").joinpath("dashboard.html").read_bytes()


@post("/analytics", status_code=204, operation_class=openapi.PostAnalytics)
async def post_analytics(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> Response[None]:
    return Rendered(await services.ingest.answer(request.scope))


@post("/analytics/batch", operation_class=openapi.PostBatch, request_max_body_size=None)
async def post_batch(request: Request[Any, Any, Any], services: NamedDependency[Services]) -> Response[bytes]:
    """Read as a stream: its limit (ANALYTICS_BATCH_MAX_BYTES) holds after decompression, so Litestar's
    own cap on the raw body is off here."""
    return Rendered(await services.ingest.batch(request.scope, request.stream()))


@route("/analytics", http_method=READ_METHODS, operation_class=openapi.GetAnalytics)
async def get_analytics(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> Response[bytes]:
    return Rendered(await services.reads.answer(request.scope))


@route("/analytics/range", http_method=READ_METHODS, operation_class=openapi.GetRange)
async def get_range(request: Request[Any, Any, Any], services: NamedDependency[Services]) -> Response[bytes]:
    """The documented path of range reads; `GET /analytics?from=&to=` answers the same, for older clients."""
    return Rendered(await services.reads.range_answer(request.scope))


@route("/analytics/breakdown", http_method=READ_METHODS, operation_class=openapi.GetBreakdown)
async def get_breakdown(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> Response[bytes]:
    return Rendered(await services.reads.breakdown_answer(request.scope))


@route("/analytics", http_method=[HttpMethod.OPTIONS], include_in_schema=False)
async def analytics_options() -> Response[None]:
    # Registered before the two analytics handlers: Litestar's own would name only one of them.
    return Response(content=None, status_code=204, headers={"Allow": ANALYTICS_ALLOW})


@get("/analytics/live", include_in_schema=False)
async def live(request: Request[Any, Any, Any], services: NamedDependency[Services]) -> Stream:
    """Server-Sent Events of the current hour, or of one value of it (`?campaign=x`; not in the OpenAPI
    document: a stream that never ends is no request/response pair). Framed by the hub; see
    `api/live.py` for why a `Stream`."""
    reads, hub = services.reads, services.live
    reads.authorize(request.scope["headers"])
    view = reads.live_view(request.scope["query_string"])
    try:
        events = hub.subscribe(view)
    except Full:
        raise ServiceUnavailableException(
            detail=f"this worker already serves {hub.max_subscribers} live streams; retry later",
            headers={"Retry-After": "5"},
        ) from None
    reads.answered(200)
    return Stream(
        events,
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


@route("/", http_method=READ_METHODS, include_in_schema=False)
async def dashboard() -> Response[bytes]:
    """The dashboard: one self-contained page (no build step, nothing fetched from elsewhere)."""
    metrics.count("/", "GET", 200)
    return Response(
        content=DASHBOARD, media_type="text/html; charset=utf-8", headers={"cache-control": "no-cache"}
    )


@route("/healthz", http_method=READ_METHODS, include_in_schema=False)
async def healthz() -> Response[bytes]:
    metrics.count("/healthz", "GET", 200)
    return Response(content=b"ok\n", media_type="text/plain")


@route("/readyz", http_method=READ_METHODS, include_in_schema=False)
async def readyz(services: NamedDependency[Services]) -> Response[bytes]:
    """Everything: NATS, the stream, Redis and the projectors (for people, `./just up` and alerts)."""
    return _readiness("/readyz", services.readiness.current(), services)


@route("/readyz/ingest", http_method=READ_METHODS, include_in_schema=False)
async def readyz_ingest(services: NamedDependency[Services]) -> Response[bytes]:
    """Whether this process can take POSTs: NATS and the stream only (for balancers and readiness
    probes, so a Redis or projector outage does not take every HTTP server out and stop ingestion)."""
    return _readiness("/readyz/ingest", services.readiness.ingest(), services)


def _readiness(path: str, problems: list[str], services: Services) -> Response[bytes]:
    metrics.count(path, "GET", 503 if problems else 200)
    if problems:
        return Response(
            content="".join(f"{p}\n" for p in problems).encode(),
            status_code=503,
            media_type="text/plain",
            headers={"Retry-After": str(services.settings.retry_after_s)},
        )
    return Response(content=b"ready\n", media_type="text/plain")


HANDLERS = [
    *(analytics_options, dashboard, post_analytics, post_batch, get_analytics, get_range, get_breakdown),
    live,
    *(healthz, readyz, readyz_ingest),
]
"""In this order: OPTIONS /analytics before the two handlers that share its path."""
