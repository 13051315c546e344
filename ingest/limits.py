"""Per-client rate limit of POSTs: a token bucket per client address, in this worker's memory.

Hand-written beside Litestar's `RateLimitConfig` because that is middleware: the raw front
(`server/fast.py`) answers POSTs before any middleware runs, and the limit must hold on both paths.
It also knows trusted proxies (`X-Forwarded-For` only from `ANALYTICS_TRUSTED_PROXIES`)."""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RateLimiter:
    """`rate` events a second per client, bursts of up to `burst`. Remembers at most `max_clients`
    addresses (the least recently seen are forgotten, which only ever lets one of them burst again)."""

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 100_000,
    ) -> None:
        self.rate = rate
        self.burst = float(max(burst, 1))
        self._clock = clock
        self._max = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def wait_s(self, client: str, events: int = 1) -> float:
        """0 when the client may send now (and its `events` are counted); otherwise the seconds until
        it may. A batch larger than the burst is let through whole when the client owes nothing, and
        what it costs past the burst is owed: the client waits until it is paid back."""
        now = self._clock()
        tokens, at = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._remember(client, tokens - events, now)
            return 0.0
        self._remember(client, tokens, now)
        return (1.0 - tokens) / self.rate

    def _remember(self, client: str, tokens: float, now: float) -> None:
        self._buckets[client] = (tokens, now)
        if len(self._buckets) > self._max:
            self._buckets.popitem(last=False)


def retry_after(wait_s: float) -> str:
    """Retry-After is whole seconds: round up, never 0."""
    return str(max(1, math.ceil(wait_s)))


def parse_networks(raw: str) -> tuple[Network, ...]:
    """`ANALYTICS_TRUSTED_PROXIES`: comma-separated addresses or CIDR networks."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip())


def client_address(peer: str | None, forwarded_for: Iterable[bytes], trusted: tuple[Network, ...]) -> str:
    """The client a request comes from: the peer, unless the peer is a trusted proxy; then the
    right-most address in X-Forwarded-For that is not a trusted proxy (the ones left of it could be
    forged by the client)."""
    address = peer or "unknown"
    if not trusted or not _trusted(address, trusted):
        return address
    hops = [hop.strip() for value in forwarded_for for hop in value.decode("latin-1").split(",")]
    for hop in reversed([h for h in hops if h]):
        if not _trusted(hop, trusted):
            return hop
        address = hop
    return address


def _trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)
