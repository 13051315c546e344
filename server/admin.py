"""The admin port: `/metrics` for every worker of the HTTP process, served apart from public traffic.

prometheus_client serves the scrape (`make_wsgi_app` on its threading WSGI server); the few lines here
only keep the port to `/metrics` (the library answers every path) and answer HEAD (it says 405)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from server import metrics

log = logging.getLogger("server")

NOT_FOUND = b"not found; the admin port serves /metrics\n"
_LENGTH = str(len(NOT_FOUND))


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


def admin_app() -> Callable[[dict[str, Any], Any], Iterable[bytes]]:
    """The WSGI app: prometheus_client's exposition at `/metrics` (GET and HEAD), 404 elsewhere."""
    scrape = make_wsgi_app(metrics.registry())

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", _LENGTH)])
            return [NOT_FOUND]
        if environ["REQUEST_METHOD"] != "HEAD":
            return scrape(environ, start_response)  # type: ignore[no-any-return]
        scrape({**environ, "REQUEST_METHOD": "GET"}, start_response)  # HEAD: a GET's headers, no body
        return []

    return app


def serve_admin(host: str, port: int) -> WSGIServer | None:
    """Serve `/metrics` on host:port from a daemon thread; returns the server (to shut it down). A port
    that is taken is an ERROR, not a reason to stop serving traffic: None then."""
    try:
        server = make_server(host, port, admin_app(), ThreadingWSGIServer, handler_class=_Quiet)
    except OSError as exc:
        log.error("admin port %s:%d: %s; serving without /metrics", host, port, exc)
        return None
    threading.Thread(target=server.serve_forever, name="admin-port", daemon=True).start()
    return server
