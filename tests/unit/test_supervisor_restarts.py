"""`./just up`'s supervisor restarts a child that dies, waiting longer each time, and forgives it once it
has stayed up: real child processes, with the backoff's bounds made small."""

from __future__ import annotations

import asyncio
import re
import sys

import pytest

from deploy import supervisor
from deploy.supervisor import Child, Supervisor


class Heard(Supervisor):
    """A supervisor that keeps what it says, and stops once a child was restarted `restarts` times."""

    def __init__(self, child: Child, restarts: int) -> None:
        super().__init__([child], None)
        self.lines: list[str] = []
        self.restarts = restarts

    def say(self, name: str, line: str, color: str = "") -> None:
        self.lines.append(line)
        if len(self.waits()) >= self.restarts:
            self.stop()

    def waits(self) -> list[float]:
        return [float(m[1]) for line in self.lines if (m := re.search(r"restarting in ([\d.]+)s", line))]


def dying(after_s: float) -> Child:
    return Child(
        "dies", [sys.executable, "-c", f"import time; time.sleep({after_s}); raise SystemExit(3)"], {}
    )


async def restarted(child: Child, restarts: int) -> Heard:
    heard = Heard(child, restarts)
    await asyncio.wait_for(heard.run(), 60)
    return heard


async def test_a_child_that_keeps_dying_waits_twice_as_long_each_time_up_to_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(supervisor, "RESTART_BACKOFF_S", (0.1, 0.4))
    heard = await restarted(dying(after_s=0), restarts=5)
    assert heard.waits()[:5] == [0.1, 0.2, 0.4, 0.4, 0.4]
    assert any("exited with 3" in line for line in heard.lines)


async def test_a_child_that_stayed_up_is_restarted_after_the_first_wait_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(supervisor, "RESTART_BACKOFF_S", (0.1, 0.4))
    monkeypatch.setattr(supervisor, "STEADY_S", 0.2)
    heard = await restarted(dying(after_s=0.3), restarts=3)
    assert heard.waits()[:3] == [0.1, 0.1, 0.1]
