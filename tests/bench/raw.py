"""The ceiling for `./just bench`: a raw ASGI app on the same granian, parsing the same query, no I/O.

What a Python HTTP server can do here at most; the bare Litestar app (`bare.py`) measures the framework.
"""

from __future__ import annotations

from typing import Any

from contract.hours import system_now_ms
from ingest.validation import parse_event
from tests.bench.bare import BODY

_NO_CONTENT = {"type": "http.response.start", "status": 204, "headers": []}
_OK = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(BODY)).encode()),
    ],
}
_EMPTY = {"type": "http.response.body", "body": b""}
_BODY = {"type": "http.response.body", "body": BODY}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["method"] == "POST":
        parse_event(scope["query_string"], now_ms=system_now_ms(), future_skew_ms=86_400_000)
        await send(_NO_CONTENT)
        await send(_EMPTY)
    else:
        await send(_OK)
        await send(_BODY)
