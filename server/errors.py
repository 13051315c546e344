"""Every error answer, rendered once: a request that fails gets the same status, headers and body whether
the raw front or a Litestar route answered it."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from server import metrics
from server.answer import JSON, TEXT, Answer
from server.failures import ParamError, Unavailable

log = logging.getLogger("server")


class _ErrorJSON(msgspec.Struct, frozen=True, omit_defaults=True):
    status: int
    error: str
    parameter: str | None = None
    dependency: str | None = None


def render_error(
    status: int, message: str, extra: dict[str, str], headers: dict[str, str] | None, accept: str
) -> Answer:
    """The body is `message` as a line of text, or JSON naming the status (and the parameter or
    dependency in `extra`) when the client accepts JSON."""
    if "application/json" in accept:
        body, media = msgspec.json.encode(_ErrorJSON(status=status, error=message, **extra)), JSON
    else:
        body, media = f"{message}\n".encode(), TEXT
    return Answer.of(status, body, media, headers)


class Errors:
    """Maps an exception raised while answering to its answer; one instance serves both paths."""

    def __init__(self, retry_after_s: int) -> None:
        self._retry_after = {"Retry-After": str(retry_after_s)}

    def answer(self, scope: Any, exc: Exception) -> Answer:
        """The answer to `exc` for this request (counted in the request metrics)."""
        status, message, extra, headers = self._describe(scope, exc)
        metrics.count(scope["path"], scope["method"], status)
        accept = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"accept"), "")
        return render_error(status, message, extra, headers, accept)

    def handler(self, request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
        """Litestar's exception handler for every exception."""
        return Rendered(self.answer(request.scope, exc))

    def _describe(self, scope: Any, exc: Exception) -> tuple[int, str, dict[str, str], dict[str, str] | None]:
        if isinstance(exc, ParamError):
            return 400, str(exc), {"parameter": exc.param}, None
        if isinstance(exc, Unavailable):
            log.warning("503: %s", exc)
            message = f"{exc.dependency} is unavailable; nothing was stored or read, retry later"
            return 503, message, {"dependency": exc.dependency}, self._retry_after
        if isinstance(exc, HTTPException):
            return exc.status_code, str(exc.detail), {}, exc.headers
        log.error("unhandled error on %s %s", scope["method"], scope["path"], exc_info=exc)
        return 500, "internal error; it has been logged", {}, None


class Rendered(Response[Any]):
    """An Answer as a Litestar Response: sent as rendered, header for header."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(content=answer.body, status_code=answer.status)
        self.answer = answer

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> Any:
        return self.answer
