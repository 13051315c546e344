"""A stream that ends below a partition's watermark is taken as a loss only once it has stayed so for
REWIND_CONFIRM_S: a restarted node or a new leader catching up reports a shorter stream for a while."""

from __future__ import annotations

import pytest

from projector.live.log_trouble import REWIND_CONFIRM_S, LogBehind, RewindWatch


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_stream_at_or_past_the_watermark_is_not_a_loss() -> None:
    watch = RewindWatch(Clock())
    assert not watch.lost(0, watermark=10, last=10)
    assert not watch.lost(0, watermark=10, last=12)


def test_a_shorter_stream_is_waited_out_then_taken_as_lost() -> None:
    clock = Clock()
    watch = RewindWatch(clock)
    with pytest.raises(LogBehind, match="ends at seq 3, below the watermark 10"):
        watch.lost(1, watermark=10, last=3)
    clock.now += REWIND_CONFIRM_S - 0.1
    with pytest.raises(LogBehind):
        watch.lost(1, watermark=10, last=3)
    clock.now += 0.1
    assert watch.lost(1, watermark=10, last=3)


def test_a_stream_that_catches_up_meanwhile_starts_the_wait_afresh() -> None:
    clock = Clock()
    watch = RewindWatch(clock)
    with pytest.raises(LogBehind):
        watch.lost(2, watermark=10, last=3)
    clock.now += REWIND_CONFIRM_S - 1
    assert not watch.lost(2, watermark=10, last=10)  # it caught up: no loss, and forgotten
    clock.now += 1
    with pytest.raises(LogBehind):
        watch.lost(2, watermark=12, last=3)  # behind again: a new wait, not the old one's end
