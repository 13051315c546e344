"""How many build processes a full replay folds the log in."""

from __future__ import annotations

from deploy.settings import Settings
from projector.replay.driver import REPLAY_SPLIT_MESSAGES, replay_processes


def test_by_default_a_large_log_gets_one_build_per_core_and_never_more_than_the_partitions() -> None:
    settings = Settings(partitions=4)
    assert replay_processes(settings, REPLAY_SPLIT_MESSAGES, cores=2) == 2
    assert replay_processes(settings, REPLAY_SPLIT_MESSAGES, cores=16) == 4
    assert replay_processes(settings, REPLAY_SPLIT_MESSAGES, cores=None) == 1


def test_by_default_a_small_log_is_folded_in_the_replay_itself() -> None:
    assert replay_processes(Settings(partitions=4), REPLAY_SPLIT_MESSAGES - 1, cores=16) == 1


def test_the_setting_decides_whatever_the_log_up_to_the_partitions() -> None:
    assert replay_processes(Settings(partitions=4, replay_processes=3), 10, cores=1) == 3
    assert replay_processes(Settings(partitions=4, replay_processes=9), 10, cores=64) == 4
    assert replay_processes(Settings(partitions=4, replay_processes=1), 10**9, cores=64) == 1
