"""An HTTP answer as status, raw header list and body: what every renderer makes, whichever path sends it."""

from __future__ import annotations

from typing import Any

TEXT = "text/plain; charset=utf-8"
CSV = "text/csv; charset=utf-8"
JSON = "application/json"

Headers = list[tuple[bytes, bytes]]


class Answer:
    """One answer, with its two ASGI messages built once: a view rendered per change is sent many times.

    The raw ASGI front sends the messages itself; the Litestar routes send this object as their ASGI app."""

    __slots__ = ("body", "body_message", "headers", "start", "status")

    def __init__(self, status: int, headers: Headers, body: bytes = b"") -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.start: dict[str, Any] = {"type": "http.response.start", "status": status, "headers": headers}
        self.body_message: dict[str, Any] = {"type": "http.response.body", "body": body, "more_body": False}

    @classmethod
    def of(cls, status: int, body: bytes, media: str | None, headers: dict[str, str] | None = None) -> Answer:
        """Named headers (lower-cased), then Content-Type and Content-Length when there is a body to type:
        the order and spelling Litestar's Response gives them."""
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
        if media is not None:
            raw += [(b"content-type", media.encode("latin-1")), (b"content-length", str(len(body)).encode())]
        return cls(status, raw, body)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(self.start)
        await send(self.body_message)

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.headers!r}, {self.body[:60]!r})"


NO_CONTENT = Answer(204, [])
