"""POST /analytics, whichever path it comes by: rate limit, parse, then 204 only after JetStream's PubAck."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar.exceptions import TooManyRequestsException

from contract import schema
from deploy.settings import Settings
from ingest.limits import RateLimiter, client_address, parse_networks, retry_after
from ingest.publisher import Publisher
from ingest.validation import idempotency_key, parse_event
from server.answer import NO_CONTENT, Answer
from server.failures import Unavailable


class Ingest:
    """Answers a POST from its ASGI scope; raises what the error renderer turns into 400, 429 or 503."""

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], int],
        publisher: Callable[[], Publisher],
        refused: Callable[[], str | None] = lambda: None,
        answered: Callable[[int], None] = lambda _: None,
    ) -> None:
        """`publisher` gives the publisher or raises Unavailable (NATS not connected yet); `refused` says
        why this process must not publish (a stream made for another partition count), if it must not."""
        self._settings = settings
        self._clock = clock
        self._publisher = publisher
        self._refused = refused
        self._answered = answered
        self._limiter = (
            RateLimiter(settings.post_rate_per_s, settings.post_burst) if settings.post_rate_per_s else None
        )
        self._trusted = parse_networks(settings.trusted_proxies)
        self._dimensions = frozenset(settings.dimension_names)

    async def answer(self, scope: Any) -> Answer:
        if self._limiter is not None:
            self._limit(scope)
        key = idempotency_key(scope["headers"])
        event = parse_event(
            scope["query_string"], self._clock(), self._settings.future_skew_ms, key, self._dimensions
        )
        await self.store(event)
        return NO_CONTENT

    async def store(self, event: schema.Event) -> None:
        """Returns once JetStream has stored `event` (its PubAck); raises Unavailable otherwise."""
        publisher = self._publisher()
        refused = self._refused()
        if refused is not None:
            raise Unavailable("NATS", refused)
        await publisher.publish(event)
        self._answered(204)

    def _limit(self, scope: Any) -> None:
        """Over the client's rate: 429 before anything is parsed or stored."""
        assert self._limiter is not None
        peer = scope.get("client")
        forwarded = (v for k, v in scope["headers"] if k == b"x-forwarded-for")
        client = client_address(peer[0] if peer else None, forwarded, self._trusted)
        wait = self._limiter.wait_s(client)
        if wait > 0:
            raise TooManyRequestsException(
                detail=f"rate limit: {self._limiter.rate:g} events a second per client; nothing was stored",
                headers={"Retry-After": retry_after(wait)},
            )
