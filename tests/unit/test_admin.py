"""The admin port: prometheus_client's exposition at /metrics only, and a taken port is one ERROR."""

from __future__ import annotations

import logging
import socket

import httpx
import pytest

from server.admin import serve_admin
from server.metrics import count
from tests.ports import free_port


def test_metrics_answer_get_and_head_and_nothing_else_is_served() -> None:
    port = free_port()
    server = serve_admin("127.0.0.1", port)
    assert server is not None
    try:
        count("/analytics", "GET", 200)
        base = f"http://127.0.0.1:{port}"
        scraped = httpx.get(f"{base}/metrics")
        assert scraped.status_code == 200
        assert scraped.headers["content-type"].startswith("text/plain")
        assert 'hourglass_http_requests_total{method="GET",route="/analytics",status="200"}' in scraped.text
        head = httpx.head(f"{base}/metrics")
        assert head.status_code == 200
        assert head.content == b""
        assert httpx.get(f"{base}/analytics?timestamp=1").status_code == 404
        assert httpx.get(f"{base}/").status_code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_a_taken_admin_port_is_one_error_and_no_server(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.ERROR, logger="server"):
            assert serve_admin("127.0.0.1", port) is None
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert f"admin port 127.0.0.1:{port}" in errors[0].getMessage()
    assert "serving without /metrics" in errors[0].getMessage()
