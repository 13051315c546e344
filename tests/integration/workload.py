"""A mixed workload with known truth: current and historic hours, clicks and impressions."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx

from api.reader import HourTotals
from contract.hours import HOUR_MS, hour_of


@dataclass
class Truth:
    clicks: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    impressions: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    users: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))

    def add(self, ts: int, user: str, kind: str) -> None:
        hour = hour_of(ts)
        (self.clicks if kind == "click" else self.impressions)[hour] += 1
        self.users[hour].add(user)

    def hours(self) -> list[int]:
        return sorted(set(self.clicks) | set(self.impressions))

    def text(self, hour: int) -> tuple[int, int, int]:
        return (len(self.users[hour]), self.clicks[hour], self.impressions[hour])


def mixed_events(now_ms: int, n: int, seed: int = 7) -> list[tuple[int, str, str]]:
    """95% in the current hour, 5% spread over earlier hours; some users repeat."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        if rng.random() < 0.95:
            ts = now_ms - rng.randrange(0, 60_000)
        else:
            ts = now_ms - rng.randrange(1, 6) * HOUR_MS - rng.randrange(0, HOUR_MS // 2)
        user = f"user-{rng.randrange(0, n // 2 + 1)}"
        kind = "click" if rng.random() < 0.3 else "impression"
        out.append((ts, user, kind))
    return out


def post_path(ts: int, user: str, kind: str) -> str:
    return f"/analytics?timestamp={ts}&user={quote(user)}&{kind}"


def parse_text(body: str) -> tuple[int, int, int]:
    lines = body.splitlines()
    assert [line.split(",")[0] for line in lines] == ["unique_users", "clicks", "impressions"]
    users, clicks, impressions = (int(line.split(",")[1]) for line in lines)
    return users, clicks, impressions


def stored_matches(truth: Truth) -> Callable[[dict[int, HourTotals]], bool]:
    """What Redis holds equals the truth: counts exactly, users within HyperLogLog's error."""

    def check(stored: dict[int, HourTotals]) -> bool:
        for hour in truth.hours():
            users, clicks, impressions = truth.text(hour)
            got = stored[hour]
            if (got.clicks, got.impressions) != (clicks, impressions):
                return False
            if abs(got.unique_users - users) > max(1, users * 0.03):
                return False
        return True

    return check


async def answers(http: httpx.AsyncClient, truth: Truth) -> dict[int, tuple[int, int, int]]:
    """Every hour of the truth as the server answers it now (each must be a 200)."""
    out = {}
    for hour in truth.hours():
        response = await http.get(f"/analytics?timestamp={hour * HOUR_MS}")
        assert response.status_code == 200, response.text
        out[hour] = parse_text(response.text)
    return out
