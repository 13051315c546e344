"""`unsettled`: when the keyed events read so far cannot tell whether a key of the hour counted, so the
audit and the single-hour replay read the partition further back."""

from __future__ import annotations

from contract.schema import Kind
from projector.fold.deltas import Keyed
from projector.log.hour_log import unsettled

W = 1000
HOUR = 7


def keyed(at: int, hour: int = HOUR, user: str = "u", key: str = "k") -> Keyed:
    return Keyed(key, user, at, hour, Kind.IMPRESSION)


def test_a_key_first_seen_a_window_after_the_start_is_settled() -> None:
    assert not unsettled([keyed(10_000)], HOUR, 9_000, W)
    assert unsettled([keyed(9_999)], HOUR, 9_000, W)


def test_a_chain_of_retries_in_other_hours_carries_back_to_its_start() -> None:
    chain = [keyed(9_500, hour=6), keyed(10_300, hour=6), keyed(11_000)]
    assert unsettled(chain, HOUR, 9_000, W)  # starts within a window of the start: who knows
    assert not unsettled(chain, HOUR, 8_000, W)
    broken = [keyed(9_500, hour=6), keyed(10_600, hour=6), keyed(11_000)]
    assert not unsettled(broken, HOUR, 9_000, W)  # 10_600 counted whatever came before 9_500


def test_only_keys_of_the_hour_and_events_up_to_their_first_there_matter() -> None:
    assert not unsettled([keyed(9_100, hour=6), keyed(12_000)], HOUR, 9_000, W)
    assert not unsettled([keyed(9_100, hour=6, user="v"), keyed(10_500)], HOUR, 9_000, W)
    later = [keyed(10_500), keyed(10_900, hour=8), keyed(11_000)]
    assert not unsettled(later, HOUR, 9_000, W)
    assert unsettled([keyed(9_100, hour=6, user="v"), keyed(9_500, user="v"), keyed(10_500)], HOUR, 9_000, W)
