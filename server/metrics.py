"""Prometheus metrics of the HTTP process: requests, group-commit batches, PubAck latency.

Granian runs several worker processes, so counters go through prometheus-client's multiprocess mode
(`PROMETHEUS_MULTIPROC_DIR`, set by `python -m server` before the workers start) and any worker can
answer a scrape with the sum. What projectors do is on their own metrics port.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

ROUTES = frozenset(
    {"/", "/analytics", "/analytics/range", "/analytics/live", "/metrics"}
    | {"/healthz", "/readyz", "/readyz/ingest"}
)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
"""RFC 9110's methods and PATCH; any other token a client makes up is counted as `other`, so label
values (and /metrics) stay bounded whatever clients send."""

REQUESTS = Counter("hourglass_http_requests", "HTTP requests answered", ["route", "method", "status"])
PUBLISH_BATCH = Histogram(
    "hourglass_publish_batch_events",
    "Events per stream message (group commit)",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
PUBACK_SECONDS = Histogram(
    "hourglass_puback_seconds",
    "From sending a batch to JetStream's PubAck",
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5),
)


def on_batch(events: int, seconds: float) -> None:
    PUBLISH_BATCH.observe(events)
    PUBACK_SECONDS.observe(seconds)


_children: dict[tuple[str, str, int], Any] = {}


def count(route: str, method: str, status: int) -> None:
    """One answered request. Called where responses are made: a middleware wrapping every `send`
    cost about a tenth of the GET throughput in `./just bench`."""
    key = (route if route in ROUTES else "other", method if method in METHODS else "other", status)
    child = _children.get(key)
    if child is None:
        child = _children[key] = REQUESTS.labels(key[0], key[1], str(status))
    child.inc()


def counter(route: str, method: str) -> Callable[[int], None]:
    return lambda status: count(route, method, status)


def registry() -> CollectorRegistry:
    """What a scrape reads: in multiprocess mode, every worker's files summed at each collect."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    summed = CollectorRegistry()
    multiprocess.MultiProcessCollector(summed)  # type: ignore[no-untyped-call]
    return summed


def exposition() -> tuple[bytes, str]:
    """What the admin port's `/metrics` answers, in the text format."""
    return generate_latest(registry()), CONTENT_TYPE_LATEST
