"""Prometheus metrics of a projector process, served on ANALYTICS_PROJECTOR_METRICS_PORT."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

APPLY_SECONDS = Histogram(
    "hourglass_projector_apply_seconds",
    "Duration of one atomic apply (deltas + watermark) in Redis",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
APPLIED_EVENTS = Counter("hourglass_projector_events_applied", "Events folded into Redis by this process")
APPLIED_SEQ = Gauge(
    "hourglass_projector_applied_seq", "Last stream sequence this process applied", ["partition"]
)


def serve(port: int) -> None:
    """Metrics are worth less than projecting: a port that is taken is logged, not fatal."""
    if not port:
        return
    try:
        start_http_server(port, addr="127.0.0.1")
    except OSError as exc:
        logging.getLogger("projector").error(
            "metrics port %d unavailable (%s); serving no metrics", port, exc
        )
