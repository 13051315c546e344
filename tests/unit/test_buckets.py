"""Quarter-hour and day-rollup tokens, and the day starts of time zones."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract.buckets import (
    DAY_MS,
    QUARTER_MS,
    cover,
    day_components,
    day_phases,
    day_start,
    day_token,
    day_tokens,
    owning_hour,
    parse_day_token,
    parse_quarter_token,
    quarter_of,
    quarter_token,
    zone,
    zone_phases,
)
from contract.hours import HOUR_MS, hour_token

MS_2000, MS_2100 = 946_684_800_000, 4_102_444_800_000


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def test_a_quarter_token_is_its_hour_token_and_its_minute() -> None:
    hour = ms("2026-11-25T18:00:00+00:00") // HOUR_MS
    assert [quarter_token(hour, q) for q in range(4)] == [f"2026112518{m}" for m in ("00", "15", "30", "45")]
    assert parse_quarter_token("202611251845") == (hour, 3)
    assert owning_hour("202611251845") == hour
    with pytest.raises(ValueError, match="quarter"):
        parse_quarter_token("202611251820")


def test_a_day_rollup_is_named_by_its_utc_start_and_is_never_cold() -> None:
    start = ms("2026-11-24T18:30:00+00:00")
    assert day_token(start) == "d202611241830"
    assert parse_day_token("d202611241830") == start
    assert owning_hour("d202611241830") is None
    with pytest.raises(ValueError, match="quarter-hour"):
        day_token(start + 60_000)


@given(st.integers(MS_2000, MS_2100), st.sampled_from(range(0, 1440, 15)))
def test_the_day_rollup_of_a_phase_holds_the_moment_and_starts_at_that_minute(at: int, phase: int) -> None:
    start = day_start(at, phase)
    assert start <= at < start + DAY_MS
    assert start % DAY_MS == phase * 60_000
    hour, quarter = at // HOUR_MS, quarter_of(at)
    assert quarter_token(hour, quarter)[:10] == hour_token(hour)
    assert hour * HOUR_MS + quarter * QUARTER_MS <= at < hour * HOUR_MS + (quarter + 1) * QUARTER_MS
    assert day_tokens(hour, quarter, [phase]) == [day_token(start)]


def test_a_zone_rolls_up_the_minutes_of_the_utc_day_at_which_its_days_start() -> None:
    assert zone_phases("Asia/Kolkata") == {18 * 60 + 30}
    assert zone_phases("Asia/Kathmandu") == {18 * 60 + 15}
    assert zone_phases("America/New_York") == {4 * 60, 5 * 60}
    assert zone_phases("America/St_Johns") == {2 * 60 + 30, 3 * 60 + 30}
    assert day_phases(["Asia/Kolkata", "UTC"]) == (0, 1110)
    assert day_phases([]) == (0,)


@pytest.mark.parametrize("name", ["Mars/Base", "", "../etc/passwd", "/etc/localtime", " UTC"])
def test_an_unknown_zone_is_refused_by_name(name: str) -> None:
    with pytest.raises(ValueError, match="not an IANA time zone"):
        zone(name)


def test_a_kolkata_day_is_one_rollup_when_its_phase_is_kept_and_27_cells_when_not() -> None:
    start, end = ms("2026-11-24T18:30:00+00:00"), ms("2026-11-25T18:30:00+00:00")
    assert cover(start, end, (0, 1110)) == ["d202611241830"]
    cells = cover(start, end, (0,))
    assert cells[:3] == ["202611241830", "202611241845", "2026112419"]
    assert cells[-3:] == ["2026112517", "202611251800", "202611251815"]
    assert len(cells) == 2 + 5 + 18 + 2
    assert day_components("d202611241830") == cells


def test_a_utc_range_covers_whole_days_with_rollups_and_the_rest_with_hours() -> None:
    start = ms("2026-11-24T22:00:00+00:00")
    assert cover(start, start + DAY_MS + 3 * HOUR_MS, (0,)) == [
        "2026112422",
        "2026112423",
        "d202611250000",
        "2026112600",
    ]


@given(
    st.integers(MS_2000 // QUARTER_MS, MS_2100 // QUARTER_MS),
    st.integers(1, 400),
    st.sets(st.sampled_from(range(0, 1440, 15)), max_size=3),
)
def test_the_cells_of_a_cover_are_exactly_the_quarters_of_the_range(
    first: int, quarters: int, phases: set[int]
) -> None:
    start, end = first * QUARTER_MS, (first + quarters) * QUARTER_MS
    covered: list[int] = []
    for cell in cover(start, end, phases):
        if cell.startswith("d"):
            s = parse_day_token(cell)
            covered += range(s, s + DAY_MS, QUARTER_MS)
        elif len(cell) == 10:
            h = owning_hour(cell)
            assert h is not None
            covered += range(h * HOUR_MS, (h + 1) * HOUR_MS, QUARTER_MS)
        else:
            hour, quarter = parse_quarter_token(cell)
            covered.append(hour * HOUR_MS + quarter * QUARTER_MS)
    assert covered == list(range(start, end, QUARTER_MS))
