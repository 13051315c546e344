"""Range reads in a local time zone, pure: local hours and days (DST, half- and quarter-hour offsets),
their labels, the refusals naming `tz`, and the cells each row reads."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api import cells
from api.ranges import RangeQuery, parse_range, render_csv
from contract import buckets
from contract.hours import HOUR_MS
from server.failures import ParamError


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def read(frm: str, to: str, tz: str, granularity: str = "day", most: int = 100) -> RangeQuery:
    """From `frm` up to `to` (one ms after `frm` when they are the same moment)."""
    end = ms(to) + (to == frm)
    query = {"from": [str(ms(frm))], "to": [str(end)], "granularity": [granularity], "tz": [tz]}
    return parse_range(query, most)


def hours_long(q: RangeQuery) -> list[float]:
    return [(end - start) / HOUR_MS for start, end in q.spans]


def test_kolkata_days_start_at_local_midnight_and_are_labelled_with_the_offset() -> None:
    q = read("2026-11-25T03:00+05:30", "2026-11-26T00:01+05:30", "Asia/Kolkata")
    assert q.labels == ("2026-11-25T00:00:00+05:30", "2026-11-26T00:00:00+05:30")
    assert q.spans[0] == (ms("2026-11-24T18:30Z"), ms("2026-11-25T18:30Z"))
    assert hours_long(q) == [24, 24]


def test_new_york_has_a_23_hour_and_a_25_hour_day() -> None:
    spring = read("2026-03-08T00:00-05:00", "2026-03-08T12:00-04:00", "America/New_York")
    assert spring.labels == ("2026-03-08T00:00:00-05:00",)
    assert hours_long(spring) == [23]
    fall = read("2026-11-01T00:00-04:00", "2026-11-02T00:00-05:00", "America/New_York")
    assert fall.labels == ("2026-11-01T00:00:00-04:00",)
    assert hours_long(fall) == [25]


def test_the_repeated_hour_at_fall_back_is_two_rows_and_the_skipped_one_none() -> None:
    fall = read("2026-11-01T00:30-04:00", "2026-11-01T03:00-05:00", "America/New_York", "hour")
    assert fall.labels == (
        "2026-11-01T00:00:00-04:00",
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T02:00:00-05:00",
    )
    spring = read("2026-03-08T00:00-05:00", "2026-03-08T04:00-04:00", "America/New_York", "hour")
    assert spring.labels == (
        "2026-03-08T00:00:00-05:00",
        "2026-03-08T01:00:00-05:00",
        "2026-03-08T03:00:00-04:00",
    )


@pytest.mark.parametrize(
    ("tz", "frm", "first"),
    [
        ("Asia/Kathmandu", "2026-06-01T12:00+05:45", "2026-06-01T00:00:00+05:45"),
        ("Australia/Adelaide", "2026-01-10T05:00+10:30", "2026-01-10T00:00:00+10:30"),
        ("Australia/Adelaide", "2026-07-10T05:00+09:30", "2026-07-10T00:00:00+09:30"),
        ("America/St_Johns", "2026-01-10T05:00-03:30", "2026-01-10T00:00:00-03:30"),
        ("America/St_Johns", "2026-07-10T05:00-02:30", "2026-07-10T00:00:00-02:30"),
    ],
)
def test_offsets_off_the_hour_are_exact(tz: str, frm: str, first: str) -> None:
    q = read(frm, frm, tz)
    assert q.labels[0] == first
    assert q.spans[0][0] == ms(first)
    hours = read(frm, frm, tz, "hour")
    assert hours.labels[0] == first[:11] + frm[11:13] + ":00:00" + first[19:]


def test_utc_keeps_its_labels_and_a_utc_zone_name_gets_offsets() -> None:
    assert read("2026-05-06T14:00Z", "2026-05-06T15:00Z", "UTC", "hour").labels == ("2026-05-06T14:00:00Z",)
    assert read("2026-05-06T14:00Z", "2026-05-06T15:00Z", "UTC").labels == ("2026-05-06",)
    assert read("2026-05-06T14:00Z", "2026-05-06T15:00Z", "Etc/UTC").labels == ("2026-05-06T00:00:00+00:00",)


@pytest.mark.parametrize("tz", ["Mars/Olympus", "../etc/passwd", "asia/kolkata ", "/UTC", "Asia"])
def test_an_unknown_zone_is_a_400_naming_tz(tz: str) -> None:
    with pytest.raises(ParamError) as caught:
        read("2026-05-06T14:00Z", "2026-05-07T14:00Z", tz)
    assert caught.value.param == "tz"
    assert "IANA time zone" in str(caught.value)


def test_offsets_not_on_a_quarter_hour_are_a_400_naming_tz() -> None:
    # Liberia kept -0:44:30 until 1972
    with pytest.raises(ParamError) as caught:
        read("1971-01-01T12:00Z", "1971-01-03T00:00Z", "Africa/Monrovia")
    assert caught.value.param == "tz"
    assert "quarter-hours" in str(caught.value)
    assert read("2026-01-01T12:00Z", "2026-01-03T00:00Z", "Africa/Monrovia").labels[0].endswith("+00:00")


def test_the_bucket_limit_holds_in_any_zone() -> None:
    with pytest.raises(ParamError) as caught:
        read("2026-01-01T00:00+05:30", "2026-01-01T11:00+05:30", "Asia/Kolkata", "hour", most=10)
    assert caught.value.param == "to"
    assert "at most 10 (ANALYTICS_RANGE_MAX_BUCKETS)" in str(caught.value)
    assert (
        len(read("2026-01-01T00:00+05:30", "2026-01-01T10:00+05:30", "Asia/Kolkata", "hour", 10).spans) == 10
    )
    with pytest.raises(ParamError) as far:
        read("2000-01-01T00:00Z", "2026-01-01T00:00Z", "Asia/Kolkata", "hour", most=10)
    assert far.value.param == "to"


def test_a_to_at_or_before_from_rounded_down_in_the_zone_is_an_empty_range() -> None:
    assert read("2026-01-02T00:00+05:30", "2026-01-01T23:00+05:30", "Asia/Kolkata").spans == ()
    assert read("2026-01-03T00:00+05:30", "2026-01-02T00:00+05:30", "Asia/Kolkata", "day").spans == ()
    assert len(read("2026-01-02T00:30+05:30", "2026-01-02T00:10+05:30", "Asia/Kolkata").spans) == 1


def test_csv_rows_carry_local_labels() -> None:
    q = read("2026-11-25T00:00+05:30", "2026-11-25T00:01+05:30", "Asia/Kolkata")
    assert render_csv(q, [(1, 2, 3)], (1, 2, 3)).decode().splitlines()[1] == "2026-11-25T00:00:00+05:30,1,2,3"


def test_a_year_by_hour_plans_one_span_per_hour() -> None:
    # How fast it plans is `./just bench-ranges`'s to say, not a test's.
    q = read("2025-01-01T00:00+05:30", "2026-01-01T00:00+05:30", "Asia/Kolkata", "hour", 9000)
    assert len(q.spans) == 8760


def test_kolkata_rows_read_quarter_hours_or_day_rollups() -> None:
    kolkata = buckets.day_phases(["Asia/Kolkata"])
    day = read("2026-11-25T00:00+05:30", "2026-11-25T00:01+05:30", "Asia/Kolkata")
    assert cells.plan([[s] for s in day.spans], kolkata).cells == ["d202611241830"]
    without = cells.plan([[s] for s in day.spans], (0,))
    assert len(without.cells) == 2 + 23 + 2  # half an hour of quarters, 23 hours, half an hour
    hour = read("2026-11-25T10:00+05:30", "2026-11-25T10:01+05:30", "Asia/Kolkata", "hour")
    assert cells.plan([[s] for s in hour.spans], kolkata).cells == [
        "202611250430",
        "202611250445",
        "202611250500",
        "202611250515",
    ]


@given(
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=1, max_value=200),
    st.sets(st.sampled_from([0, 240, 1110]), max_size=2),
)
def test_a_plan_of_whole_utc_hours_names_each_rows_cover_and_the_ranges(
    first: int, count: int, phases: set[int]
) -> None:
    spans = [(h * HOUR_MS, (h + 1) * HOUR_MS) for h in range(first, first + count)]
    made = cells.plan([[s] for s in spans], sorted(phases))
    assert [[made.cells[i] for i in row] for row in made.rows] == [buckets.cover(*s) for s in spans]
    whole = buckets.cover(spans[0][0], spans[-1][1], sorted(phases))
    assert [made.cells[i] for i in made.total] == whole
    uneven = cells.plan([[spans[0]], [(spans[-1][0], spans[-1][1] + buckets.QUARTER_MS)]], sorted(phases))
    assert [uneven.cells[i] for i in uneven.rows[0]] == buckets.cover(*spans[0])
