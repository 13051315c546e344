"""POST /analytics, whichever path it comes by, and POST /analytics/batch: rate limit, parse, then answer
only after JetStream's PubAck."""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable
from typing import Any

import msgspec
from litestar.exceptions import HTTPException, TooManyRequestsException

from contract import schema
from deploy.settings import Settings
from ingest.batch_body import MEDIA_TYPES, BatchReader, LineRules, Rejected, TooLarge
from ingest.limits import RateLimiter, client_address, parse_networks, retry_after
from ingest.publisher import Publisher
from ingest.validation import idempotency_key, parse_event
from server.answer import JSON, NO_CONTENT, Answer
from server.failures import Unavailable


class BatchAnswer(msgspec.Struct, frozen=True):
    """The 200 of POST /analytics/batch: every accepted event is durably in the stream."""

    accepted: int
    duplicates: int
    """Lines that repeat the user and key of an earlier line of the batch: stored once, counted once."""
    rejected: list[Rejected]


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

    async def batch(self, scope: Any, body: AsyncIterable[bytes]) -> Answer:
        """POST /analytics/batch: every valid line stored, then 200 with what was accepted and refused."""
        headers = scope["headers"]
        media, encoding, length = _body_headers(headers)
        if media not in MEDIA_TYPES:
            raise HTTPException(
                status_code=415,
                detail=f"Content-Type: {media or 'none'} is not accepted; send {' or '.join(MEDIA_TYPES)}",
            )
        if encoding not in ("", "identity", "gzip"):
            raise HTTPException(
                status_code=415, detail=f"Content-Encoding: {encoding} is not accepted; send gzip or none"
            )
        s = self._settings
        if encoding != "gzip" and length is not None and length > s.batch_max_bytes:
            raise HTTPException(
                status_code=413,
                detail=f"body: more than {s.batch_max_bytes} bytes ({length} sent); "
                "split the batch (ANALYTICS_BATCH_MAX_BYTES)",
            )
        rules = LineRules(self._clock(), s.future_skew_ms, self._dimensions, idempotency_key(headers))
        reader = BatchReader(media, encoding == "gzip", s.batch_max_bytes, s.batch_max_events, rules)
        try:
            async for chunk in body:
                reader.feed(chunk)
            lines = reader.finish()
        except TooLarge as exc:
            raise HTTPException(status_code=413, detail=str(exc)) from None
        if self._limiter is not None and lines.events:
            self._limit(scope, len(lines.events))
        if lines.events:
            await self._publishing().publish_all(lines.events)
        self._answered(200)
        answer = BatchAnswer(len(lines.events), lines.duplicates, lines.rejected)
        return Answer.of(200, msgspec.json.encode(answer), JSON)

    async def store(self, event: schema.Event) -> None:
        """Returns once JetStream has stored `event` (its PubAck); raises Unavailable otherwise."""
        await self._publishing().publish(event)
        self._answered(204)

    def _publishing(self) -> Publisher:
        """The publisher, unless NATS is not connected yet or this process must not publish."""
        publisher = self._publisher()
        refused = self._refused()
        if refused is not None:
            raise Unavailable("NATS", refused)
        return publisher

    def _limit(self, scope: Any, events: int = 1) -> None:
        """Over the client's rate: 429 before anything is stored (a batch counts its events)."""
        assert self._limiter is not None
        peer = scope.get("client")
        forwarded = (v for k, v in scope["headers"] if k == b"x-forwarded-for")
        client = client_address(peer[0] if peer else None, forwarded, self._trusted)
        wait = self._limiter.wait_s(client, events)
        if wait > 0:
            raise TooManyRequestsException(
                detail=f"rate limit: {self._limiter.rate:g} events a second per client; nothing was stored",
                headers={"Retry-After": retry_after(wait)},
            )


def _body_headers(headers: list[tuple[bytes, bytes]]) -> tuple[str, str, int | None]:
    """The media type (without parameters), the content coding and the length a request declares."""
    media, encoding, length = "", "", None
    for name, value in headers:
        if name == b"content-type":
            media = value.decode("latin-1").partition(";")[0].strip().lower()
        elif name == b"content-encoding":
            encoding = value.decode("latin-1").strip().lower()
        elif name == b"content-length" and value.isdigit():
            length = int(value)
    return media, encoding, length
