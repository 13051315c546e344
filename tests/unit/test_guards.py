"""Pure rules of the HTTP guards: the token bucket, who the client is behind proxies, read tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.tokens import ReadTokens
from ingest.limits import RateLimiter, client_address, parse_networks, retry_after


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_passes_then_the_rate_applies() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.wait_s("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.wait_s("a") == pytest.approx(0.5)
    assert limiter.wait_s("b") == 0.0  # every client has its own bucket
    clock.now = 0.5
    assert limiter.wait_s("a") == 0.0
    assert limiter.wait_s("a") > 0


@given(st.lists(st.floats(min_value=0, max_value=5), max_size=60))
def test_no_client_ever_gets_more_than_burst_plus_rate_times_time(gaps: list[float]) -> None:
    clock = Clock()
    limiter = RateLimiter(rate=4.0, burst=5, clock=clock)
    allowed = 0
    for gap in gaps:
        clock.now += gap
        allowed += limiter.wait_s("c") == 0.0
    assert allowed <= 5 + 4.0 * clock.now + 1e-9


def test_retry_after_is_whole_seconds_never_zero() -> None:
    assert [retry_after(w) for w in (0.01, 1.0, 1.2)] == ["1", "1", "2"]


def test_forwarded_for_counts_only_from_trusted_proxies() -> None:
    proxies = parse_networks("10.0.0.0/8, 127.0.0.1")
    xff = [b"198.51.100.1, 203.0.113.7, 10.1.2.3"]
    assert client_address("127.0.0.1", xff, proxies) == "203.0.113.7"
    assert client_address("192.0.2.9", xff, proxies) == "192.0.2.9"  # not a proxy: its header is ignored
    assert client_address("127.0.0.1", [], proxies) == "127.0.0.1"
    assert client_address("127.0.0.1", xff, ()) == "127.0.0.1"  # no proxies configured


def test_read_tokens_accept_only_a_bearer_of_a_known_token() -> None:
    tokens = ReadTokens(["alpha", "beta"])
    assert tokens.allow(b"Bearer alpha")
    assert tokens.allow(b"bearer beta")
    assert not tokens.allow(b"Bearer alph")
    assert not tokens.allow(b"alpha")
    assert not tokens.allow(None)
    assert ReadTokens([]).allow(None)  # no tokens set: reads stay open


def test_read_tokens_come_from_the_setting_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# dashboard\nfrom-file\n\n")
    tokens = ReadTokens.from_settings("inline-1, inline-2", str(path))
    assert all(tokens.allow(f"Bearer {t}".encode()) for t in ("inline-1", "inline-2", "from-file"))
    assert not tokens.allow(b"Bearer # dashboard")
