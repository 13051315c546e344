"""A raw ASGI front on the Litestar app: plain POSTs and GETs of one hour are answered without
Litestar's routing, Request or Response objects; everything else, and anything unusual about those
two (an error to answer, HEAD, a range, a rate limit), goes to the Litestar app unchanged.

Litestar refuses an `@asgi` handler on a path that other handlers share, and `/analytics` must keep
its documented GET and POST handlers for the OpenAPI document and for every answer but the two plain
ones; hence a front rather than a route. The answers are byte for byte the Litestar route's
(`tests/unit/test_fast_path.py`), and `ANALYTICS_HTTP_FAST_PATH=0` turns the front off.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from api.routes import EMPTY_BODY, Api
from ingest.routes import Ingest

Message = dict[str, Any]
Failed = Callable[[Any, Exception], tuple[Message, Message]]
"""The ASGI messages the Litestar app's exception handlers would send for this scope and error."""

NO_CONTENT: Message = {"type": "http.response.start", "status": 204, "headers": []}


class FastFront:
    def __init__(self, app: Any, ingest: Ingest, api: Api, failed: Failed) -> None:
        self.app = app
        self._ingest = ingest
        self._api = api
        self._failed = failed

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/analytics":
            method = scope["method"]
            if method == "POST":
                event = self._ingest.plain(scope)
                if event is not None:
                    try:
                        await self._ingest.store(event)
                    except Exception as exc:  # answered as the app's exception handlers would
                        start, body = self._failed(scope, exc)
                    else:
                        start, body = NO_CONTENT, EMPTY_BODY
                    await send(start)
                    await send(body)
                    return
            elif method == "GET":
                answer = await self._api.plain_answer(scope)
                if answer is not None:
                    await send(answer[0])
                    await send(answer[1])
                    return
        await self.app(scope, receive, send)
