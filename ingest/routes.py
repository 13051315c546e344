"""HTTP handler of the write side: POST /analytics answers 204 only after JetStream's PubAck."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from litestar import Request, Response, post
from litestar.exceptions import TooManyRequestsException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import Operation

from contract import schema
from contract.errors import ParamError, Unavailable
from contract.schema import key_problem
from contract.settings import Settings
from ingest.limits import RateLimiter, client_address, parse_networks, retry_after
from ingest.publisher import Publisher
from ingest.validation import parse_event, parse_idempotency_key, plain_event


def _idempotency_header(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """Read from the raw ASGI headers: building Litestar's Headers costs more on this hot path."""
    found: str | None = None
    for name, value in headers:
        if name == b"idempotency-key":
            if found is not None:
                raise ParamError("Idempotency-Key", "is given more than once")
            found = value.decode("latin-1")
    return found


class Ingest:
    """The POST route; `publisher` is attached by the app's lifespan once NATS is connected."""

    def __init__(
        self, settings: Settings, clock: Callable[[], int], answered: Callable[[int], None] = lambda _: None
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.answered = answered
        self.publisher: Publisher | None = None
        self.refused: Callable[[], str | None] = lambda: None
        self.limiter = (
            RateLimiter(settings.post_rate_per_s, settings.post_burst) if settings.post_rate_per_s else None
        )
        self.trusted = parse_networks(settings.trusted_proxies)

    def _limit(self, scope: Any) -> None:
        """Over the client's rate: 429 before anything is parsed or stored."""
        assert self.limiter is not None
        peer = scope.get("client")
        forwarded = (v for k, v in scope["headers"] if k == b"x-forwarded-for")
        client = client_address(peer[0] if peer else None, forwarded, self.trusted)
        wait = self.limiter.wait_s(client)
        if wait > 0:
            raise TooManyRequestsException(
                detail=f"rate limit: {self.limiter.rate:g} events a second per client; nothing was stored",
                headers={"Retry-After": retry_after(wait)},
            )

    def route(self, operation_class: type[Operation] = Operation) -> HTTPRouteHandler:
        settings, clock = self.settings, self.clock

        @post("/analytics", status_code=204, operation_class=operation_class)
        async def post_analytics(request: Request[Any, Any, Any]) -> Response[None]:
            if self.limiter is not None:
                self._limit(request.scope)
            event = parse_event(
                request.scope["query_string"],
                now_ms=clock(),
                future_skew_ms=settings.future_skew_ms,
                idempotency_key=parse_idempotency_key(_idempotency_header(request.scope["headers"])),
            )
            await self.store(event)
            return Response(content=None, status_code=204)

        return post_analytics

    def plain(self, scope: Any) -> schema.Event | None:
        """The event of a plain, valid POST (the fast path); None sends the request to the full route,
        which parses it again and answers whatever is wrong with it."""
        if self.limiter is not None:
            return None
        try:
            key = _idempotency_header(scope["headers"])
        except ParamError:
            return None
        if key is not None and key_problem(key) is not None:
            return None
        return plain_event(scope["query_string"], self.clock(), self.settings.future_skew_ms, key)

    async def store(self, event: schema.Event) -> None:
        """Returns once JetStream has stored `event` (its PubAck); raises Unavailable otherwise."""
        if self.publisher is None:
            raise Unavailable("NATS", "not connected yet")
        refused = self.refused()
        if refused is not None:
            raise Unavailable("NATS", refused)
        await self.publisher.publish(event)
        self.answered(204)
