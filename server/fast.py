"""A raw ASGI front on the Litestar app: POSTs and GETs of `/analytics` are answered without Litestar's
routing, Request or Response objects; everything else (HEAD, OPTIONS, other paths) goes to the app.

The answers come from the same `Ingest`, `Reads` and `Errors` the Litestar routes call, so the two paths
cannot differ; the front exists for speed (GET is about 1.5x a bare Litestar handler with it, see
docs/benchmarks.md), and `ANALYTICS_HTTP_FAST_PATH=0` turns it off. Litestar refuses an `@asgi` handler
on a path that other handlers share, and `/analytics` keeps its GET and POST handlers for the OpenAPI
document; hence a front rather than a route.
"""

from __future__ import annotations

from typing import Any

from server.services import Services


class FastFront:
    def __init__(self, app: Any, services: Services) -> None:
        self.app = app
        self._post = services.ingest.answer
        self._get = services.reads.answer
        self._errors = services.errors

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/analytics":
            method = scope["method"]
            if method == "POST":
                answering = self._post
            elif method == "GET":
                answering = self._get
            else:
                await self.app(scope, receive, send)
                return
            try:
                answer = await answering(scope)
            except Exception as exc:
                answer = self._errors.answer(scope, exc)
            await send(answer.start)
            await send(answer.body_message)
            return
        await self.app(scope, receive, send)
