"""The admin port: `/metrics` for every worker of the HTTP process, served apart from public traffic."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from server import metrics

log = logging.getLogger("server")


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        if self.path.partition("?")[0] != "/metrics":
            payload, content_type, status = b"not found; the admin port serves /metrics\n", "text/plain", 404
        else:
            payload, content_type = metrics.exposition()
            status = 200
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        """Scrapes are not worth a log line each."""


def serve_admin(host: str, port: int) -> ThreadingHTTPServer | None:
    """Serve `/metrics` on host:port from a daemon thread; returns the server (to shut it down). A port
    that is taken is an ERROR, not a reason to stop serving traffic: None then."""
    try:
        server = ThreadingHTTPServer((host, port), _Handler)
    except OSError as exc:
        log.error("admin port %s:%d: %s; serving without /metrics", host, port, exc)
        return None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="admin-port", daemon=True).start()
    return server
