"""The fast path answers byte for byte as the Litestar routes do: the same requests, sent to the app with
`http_fast_path` on and off, get the same ASGI messages (status, headers in order, body)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.types import ASGIApp

from api.reader import HourTotals
from contract.errors import Unavailable
from contract.settings import Settings
from server.app import Clients, create_app
from server.fast import FastFront
from tests.fakes import MemoryEventLog
from tests.helpers import lifespan

NOW = 1_764_079_200_000
SETTINGS = Settings(publish_linger_ms=0)


class Hours:
    def __init__(self) -> None:
        self.down = False

    async def __call__(self, hour: int) -> HourTotals:
        if self.down:
            raise Unavailable("Redis", "the fake is down")
        return HourTotals(hour % 7, hour % 5, hour % 3)


async def call(app: ASGIApp, method: str, query: bytes, headers: list[tuple[bytes, bytes]]) -> list[Any]:
    sent: list[Any] = []
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": "/analytics", "raw_path": b"/analytics", "query_string": query,
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 1), "server": ("hourglass", 80),
        "state": {},
    }  # fmt: skip
    requests = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        return requests.pop(0) if requests else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append({k: v for k, v in message.items() if k != "more_body" or v})

    await app(scope, receive, send)  # type: ignore[arg-type]
    return sent


class Pair:
    """The same fakes behind two apps: one with the fast front, one without."""

    def __init__(self, fast: ASGIApp, full: ASGIApp, log: MemoryEventLog, hours: Hours) -> None:
        self.fast, self.full, self.log, self.hours = fast, full, log, hours

    async def both(self, method: str, query: bytes, headers: list[tuple[bytes, bytes]]) -> list[Any]:
        fast = await call(self.fast, method, query, headers)
        full = await call(self.full, method, query, headers)
        assert fast == full, (method, query, headers)
        return fast


async def pair_of(config: Settings) -> AsyncIterator[Pair]:
    log, hours = MemoryEventLog(), Hours()
    clients = Clients(log=log, hours=hours)
    fast = create_app(config, clients, clock=lambda: NOW)
    full = create_app(config.replace(http_fast_path=False), clients, clock=lambda: NOW)
    assert isinstance(fast, FastFront)
    assert not isinstance(full, FastFront)
    async with lifespan(fast), lifespan(full):
        yield Pair(fast, full, log, hours)


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    async for found in pair_of(SETTINGS):
        yield found


@pytest.fixture
async def guarded() -> AsyncIterator[Pair]:
    async for found in pair_of(SETTINGS.replace(read_tokens="tok")):
        yield found


TEXT = [(b"accept", b"text/plain")]
JSON = [(b"accept", b"application/json")]


async def test_a_plain_post_is_answered_alike_and_appended_once_per_app(pair: Pair) -> None:
    sent = await pair.both("POST", b"timestamp=123&user=kek&click", [])
    assert sent[0]["status"] == 204
    assert len(pair.log.messages) == 2


@pytest.mark.parametrize("accept", [[], TEXT, JSON])
async def test_posts_that_fail_are_answered_alike(pair: Pair, accept: list[tuple[bytes, bytes]]) -> None:
    pair.log.down = True
    sent = await pair.both("POST", b"timestamp=123&user=kek&click", accept)
    assert sent[0]["status"] == 503


@pytest.mark.parametrize("accept", [[], TEXT, JSON])
async def test_gets_are_answered_alike_in_text_json_and_304(
    pair: Pair, accept: list[tuple[bytes, bytes]]
) -> None:
    sent = await pair.both("GET", f"timestamp={NOW}".encode(), accept)
    assert sent[0]["status"] == 200
    etag = dict(sent[0]["headers"])[b"etag"]
    again = await pair.both("GET", f"timestamp={NOW}".encode(), [*accept, (b"if-none-match", etag)])
    assert again[0]["status"] == 304


async def test_gets_while_redis_is_down_are_answered_alike(pair: Pair) -> None:
    pair.hours.down = True
    assert (await pair.both("GET", b"timestamp=7200000", JSON))[0]["status"] == 503


@pytest.mark.parametrize("authorization", [None, b"Bearer tok", b"Bearer nope"])
async def test_read_tokens_are_enforced_alike(guarded: Pair, authorization: bytes | None) -> None:
    headers = [] if authorization is None else [(b"authorization", authorization)]
    sent = await guarded.both("GET", b"timestamp=0", headers)
    assert sent[0]["status"] == (200 if authorization == b"Bearer tok" else 401)


_PARTS = st.sampled_from(
    ["timestamp=123", f"timestamp={NOW}", "timestamp=x", "user=kek", "user=", "user=%41", "click",
     "impression", "click=1", "event=click", "from=0", "to=7200000", "other=1", ""]
)  # fmt: skip
_HEADERS = st.lists(
    st.sampled_from(
        [(b"idempotency-key", b"k-1"), (b"idempotency-key", b""), (b"accept", b"application/json"),
         (b"if-none-match", b'"0-0-0-0-t"')]
    ),
    max_size=3,
)  # fmt: skip


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["GET", "POST", "HEAD"]), st.lists(_PARTS, max_size=5), _HEADERS)
async def test_any_request_is_answered_alike(
    pair: Pair, method: str, parts: list[str], headers: list[tuple[bytes, bytes]]
) -> None:
    await pair.both(method, "&".join(parts).encode(), headers)
