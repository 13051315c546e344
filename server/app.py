"""`create_app`: the Litestar app (behind its fast front), its error mapping, health checks, and connection
lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, NamedTuple

import msgspec
import nats
import nats.errors
from litestar import HttpMethod, Litestar, Request, Response, route
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.types import ASGIApp
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from redis.asyncio import Redis

from api.cold import ColdStore
from api.live import LiveHub
from api.range_route import range_route
from api.reader import HourTotals, Reader
from api.routes import TEXT, Api
from api.tokens import ReadTokens
from contract.backoff import with_backoff
from contract.errors import ParamError, Unavailable
from contract.hours import changes_subject, system_now_ms
from contract.keys import Keys
from contract.schema import decode_changed
from contract.settings import Settings
from ingest.publisher import Publisher
from ingest.routes import Ingest
from ingest.seams import EventLog
from server import metrics, openapi
from server.fast import FastFront
from server.readiness import Readiness

log = logging.getLogger("server")

LIVE_MIN_INTERVAL_S = 0.25
"""At most four pushes a second per live stream, however busy the current hour."""
DRAIN_TIMEOUT_S = 5.0
"""A shutdown never waits longer than this for NATS to take what is still buffered."""
READ_METHODS = [HttpMethod.GET, HttpMethod.HEAD]
ANALYTICS_ALLOW = "GET, HEAD, POST, OPTIONS"


@dataclass
class Clients:
    """Connections the app uses. Passed in (tests) they stay the caller's; otherwise the lifespan's.

    `log` and `hours` replace the NATS append and the Redis read with stand-ins (unit tests), as an
    httpx transport replaces the network."""

    nc: NATS | None = None
    redis: Redis | None = None
    reads: NATS | None = None
    """The reading connection (`api` role) when it is not `nc`."""
    log: EventLog | None = None
    hours: Callable[[int], Awaitable[HourTotals]] | None = None


def create_app(
    settings: Settings,
    clients: Clients | None = None,
    clock: Callable[[], int] = system_now_ms,
) -> ASGIApp:
    ingest = Ingest(settings, clock, metrics.counter("/analytics", "POST"))
    tokens = ReadTokens.from_settings(settings.read_tokens, settings.read_tokens_file)
    api = Api(
        settings.read_staleness_s, metrics.counter("/analytics", "GET"), settings.range_max_buckets, tokens
    )
    state = Clients() if clients is None else clients
    owned = clients is None
    readiness = Readiness(settings, lambda: state.nc, lambda: state.redis, clock)
    ingest.refused = lambda: readiness.refused

    async def current_json(hour: int) -> bytes:
        return (await api.cache.latest(hour)).json

    live = LiveHub(
        current_json, clock, settings.live_max_subscribers, settings.live_heartbeat_s, LIVE_MIN_INTERVAL_S
    )

    async def on_change(msg: Msg) -> None:
        with contextlib.suppress(ValueError):
            hours = decode_changed(msg.data).hours
            api.cache.changed(hours)
            live.changed(hours)

    reader: Reader | None = None
    cold: ColdStore | None = None

    separate_reads = bool(settings.nats_api_url) and settings.nats_api_url != settings.nats_url

    async def attach_nats(nc: NATS) -> None:
        state.nc = nc
        ingest.publisher = Publisher.over_nats(nc, settings, on_batch=metrics.on_batch)
        if not separate_reads:
            await attach_reads(nc)

    async def attach_reads(nc: NATS) -> None:
        """Change notices and cold hours: under the `api` role, on a connection of their own."""
        nonlocal cold
        state.reads = nc
        await nc.subscribe(changes_subject(settings.stream_name), cb=on_change)
        cold = ColdStore(nc, settings.stream_name, settings.publish_timeout_s)
        if reader is not None:
            reader.cold = cold

    def attach_redis(client: Redis) -> None:
        nonlocal reader
        state.redis = client
        reader = Reader(client, Keys(settings.key_prefix), settings.partitions, cold)
        api.read, api.read_buckets = reader.hour, reader.buckets

    @contextlib.asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        if state.hours is not None:
            api.read = state.hours
        else:
            if state.redis is None:
                state.redis = redis_client(settings)
            attach_redis(state.redis)
        connecting: asyncio.Task[None] | None = None
        connecting_reads: asyncio.Task[None] | None = None
        if state.log is not None:
            ingest.publisher = Publisher(state.log, settings)
        elif state.nc is None:
            connecting = asyncio.create_task(
                _connect_nats_forever(settings.nats_options("hourglass-http"), attach_nats)
            )
            if separate_reads:
                options = settings.nats_read_options("hourglass-http-reads")
                connecting_reads = asyncio.create_task(_connect_nats_forever(options, attach_reads))
        else:
            await attach_nats(state.nc)
            if separate_reads:
                await attach_reads(state.reads or state.nc)
        with contextlib.suppress(Exception):
            readiness.problems = await readiness.check()  # a first answer before the first probe
        checking = asyncio.create_task(readiness.run())
        try:
            yield
        finally:
            live.close()  # open live streams end, so shutdown does not wait on them
            readiness.stopped = True
            for task in (connecting, connecting_reads, checking):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if ingest.publisher is not None:
                await ingest.publisher.close()  # answer every request still waiting for a PubAck
            if owned:
                for nc in {state.nc, state.reads} - {None}:
                    assert nc is not None
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(nc.drain(), DRAIN_TIMEOUT_S)
                if state.redis is not None:
                    await state.redis.aclose()

    @route("/analytics", http_method=[HttpMethod.OPTIONS], include_in_schema=False)
    async def analytics_options() -> Response[None]:
        # Registered before the two analytics handlers: Litestar's own would name only one of them.
        return Response(content=None, status_code=204, headers={"Allow": ANALYTICS_ALLOW})

    dashboard_page = files("server").joinpath("dashboard.html").read_bytes()

    @route("/", http_method=READ_METHODS, include_in_schema=False)
    async def dashboard() -> Response[bytes]:
        """The dashboard: one self-contained page (no build step, nothing fetched from elsewhere)."""
        metrics.count("/", "GET", 200)
        return Response(
            content=dashboard_page,
            media_type="text/html; charset=utf-8",
            headers={"cache-control": "no-cache"},
        )

    @route("/healthz", http_method=READ_METHODS, include_in_schema=False)
    async def healthz() -> Response[bytes]:
        metrics.count("/healthz", "GET", 200)
        return Response(content=b"ok\n", media_type=TEXT)

    @route("/readyz", http_method=READ_METHODS, include_in_schema=False)
    async def readyz() -> Response[bytes]:
        problems = readiness.current()
        metrics.count("/readyz", "GET", 503 if problems else 200)
        if problems:
            body = "".join(f"{p}\n" for p in problems).encode()
            return Response(
                content=body,
                status_code=503,
                media_type=TEXT,
                headers={"Retry-After": str(settings.retry_after_s)},
            )
        return Response(content=b"ready\n", media_type=TEXT)

    def bad_request(request: Request[Any, Any, Any], exc: ParamError) -> Response[bytes]:
        return _error(request, 400, str(exc), {"parameter": exc.param})

    def unavailable_error(exc: Unavailable) -> _Error:
        log.warning("503: %s", exc)
        return _Error(
            503,
            f"{exc.dependency} is unavailable; nothing was stored or read, retry later",
            {"dependency": exc.dependency},
            {"Retry-After": str(settings.retry_after_s)},
        )

    def unavailable(request: Request[Any, Any, Any], exc: Unavailable) -> Response[bytes]:
        return _error(request, *unavailable_error(exc))

    def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
        return _error(request, exc.status_code, str(exc.detail), {}, headers=exc.headers)

    def internal(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(request, 500, "internal error; it has been logged", {})

    def failed(scope: Any, exc: Exception) -> tuple[dict[str, Any], dict[str, Any]]:
        """What `unavailable` and `internal` answer, as raw ASGI messages for the fast path."""
        if isinstance(exc, Unavailable):
            return _raw_error(scope, *unavailable_error(exc))
        log.error("unhandled error on %s %s", scope["method"], scope["path"], exc_info=exc)
        return _raw_error(scope, 500, "internal error; it has been logged", {})

    app = Litestar(
        route_handlers=[
            analytics_options,
            dashboard,
            ingest.route(openapi.PostAnalytics),
            api.route(openapi.GetAnalytics),
            range_route(api, metrics.counter("/analytics/range", "GET"), openapi.GetRange),
            api.live_route(live),
            healthz,
            readyz,
        ],
        lifespan=[lifespan],
        exception_handlers={
            ParamError: bad_request,
            Unavailable: unavailable,
            HTTPException: http_error,
            Exception: internal,
        },
        openapi_config=OpenAPIConfig(
            title="Hourglass",
            version="1",
            description="Counts ad clicks, impressions and unique users per UTC hour.",
            path="/schema",
            # The document itself, as JSON, at /schema and /schema/openapi.json: no UI that loads from a CDN.
            render_plugins=[JsonRenderPlugin(path=["/", "/openapi.json"])],
        ),
        debug=False,
    )
    if not settings.http_fast_path:
        return app
    return FastFront(app, ingest, api, failed)


def redis_client(settings: Settings) -> Redis:
    return Redis.from_url(**settings.redis_options())


async def _connect_nats_forever(options: dict[str, Any], attach: Callable[[NATS], Awaitable[None]]) -> None:
    """nats-py does not retry a failed first connect, so the app starts anyway and keeps trying."""
    nc = await with_backoff(
        lambda: nats.connect(**options), (TimeoutError, nats.errors.Error, OSError), "NATS", log
    )
    await attach(nc)


class _ErrorJSON(msgspec.Struct, frozen=True, omit_defaults=True):
    status: int
    error: str
    parameter: str | None = None
    dependency: str | None = None


class _Error(NamedTuple):
    status: int
    message: str
    extra: dict[str, str]
    headers: dict[str, str] | None = None


def _error_body(status: int, message: str, extra: dict[str, str], accept: str) -> tuple[bytes, str]:
    if "application/json" in accept:
        return msgspec.json.encode(_ErrorJSON(status=status, error=message, **extra)), "application/json"
    return f"{message}\n".encode(), TEXT


def _error(
    request: Request[Any, Any, Any],
    status: int,
    message: str,
    extra: dict[str, str],
    headers: dict[str, str] | None = None,
) -> Response[bytes]:
    metrics.count(request.scope["path"], request.method, status)
    body, media = _error_body(status, message, extra, request.headers.get("accept", ""))
    return Response(content=body, status_code=status, media_type=media, headers=headers)


def _raw_error(
    scope: Any,
    status: int,
    message: str,
    extra: dict[str, str],
    headers: dict[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`_error`'s answer as ASGI messages, header for header."""
    metrics.count(scope["path"], scope["method"], status)
    accept = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"accept"), "")
    body, media = _error_body(status, message, extra, accept)
    content_type = f"{media}; charset=utf-8" if media.startswith("text/") else media
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    raw += [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    return (
        {"type": "http.response.start", "status": status, "headers": raw},
        {"type": "http.response.body", "body": body, "more_body": False},
    )
